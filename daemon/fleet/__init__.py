"""Changes to serving: replicas, recorded deploys (canary, smoke, waves, revert), reconcile, the watch."""

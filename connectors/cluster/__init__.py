"""A Ray cluster as a round's runner: the Jobs REST client and the exchange (what the daemon's side uses, no Ray),
and the Ray Data / Ray Train stages (`ray_runtime`, imported only by the job that runs on the cluster)."""

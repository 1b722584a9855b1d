"""`taoflow run`: the supervisor, the flywheel scheduler, the admin API and the daemon's metrics."""

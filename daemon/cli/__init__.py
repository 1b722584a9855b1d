"""The `taoflow` command line: commands, what they print, and the demo with its sample logs."""

from taoflow.daemon.cli.main import main, run

__all__ = ["main", "run"]

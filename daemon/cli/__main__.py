from taoflow.daemon.cli.main import run

run()

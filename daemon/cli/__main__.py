import sys

from taoflow.daemon.cli.main import main

sys.exit(main())

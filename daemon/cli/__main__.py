import sys

from taoflow.daemon.cli.commands import main

sys.exit(main())

import os
import sys

import pytest

pytest_plugins = ["tests.support.fixtures"]


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The test process reads Delta tables (deltalake 1.6.6), whose runtime threads can abort the interpreter's
    finalisation after every test has passed: leave with pytest's own exit status before it (as `taoflow` does,
    daemon/cli/main.py)."""
    if "deltalake" in sys.modules:
        status = getattr(config, "_taoflow_exitstatus", None)
        if status is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(status))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    session.config._taoflow_exitstatus = exitstatus

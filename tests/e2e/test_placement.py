"""`model.device` / `model.dtype`: resolution, the errors a missing GPU gives, and the real model on a placement."""

import pytest

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.connectors.generation.placement import (
    Placement,
    check_free_memory,
    resolve_placement,
    visible_gpus,
    weights_bytes,
)
from taoflow.connectors.protocols import SamplingConfig
from taoflow.connectors.records import Message

needs_no_gpu = pytest.mark.skipif(visible_gpus() > 0, reason="checks the errors of a machine without a GPU")


@needs_no_gpu
def test_auto_is_the_cpu_in_float32_without_a_gpu():
    assert resolve_placement("auto", "auto") == Placement("cpu", "float32")
    assert resolve_placement("cpu", "bfloat16") == Placement("cpu", "bfloat16")


@needs_no_gpu
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_a_gpu_the_machine_lacks_is_an_error_not_the_cpu(device):
    with pytest.raises(ConfigurationError, match=rf"model.device is '{device}' but torch sees no GPU"):
        resolve_placement(device, "auto")


@pytest.mark.parametrize(
    ("device", "dtype", "message"), [("tpu", "auto", "not one of"), ("cpu", "int8", "model.dtype")]
)
def test_unknown_devices_and_dtypes_are_named(device, dtype, message):
    with pytest.raises(ConfigurationError, match=message):
        resolve_placement(device, dtype)


def test_weights_bytes_reads_the_safetensors_headers(base_model):
    on_disk = sum(p.stat().st_size for p in base_model.path.glob("*.safetensors"))
    fp32 = weights_bytes(base_model.path, "float32")
    assert 0.98 * on_disk < fp32 <= on_disk  # the file is float32: the weights are all of it but the header
    assert weights_bytes(base_model.path, "bfloat16") == fp32 // 2
    check_free_memory(Placement("cpu", "float32"), 10 * fp32, what="training")  # the CPU is not checked


def test_the_generator_runs_in_the_placements_dtype(base_model):
    prompts = [[Message("user", "What is 12 + 30?")], [Message("user", "Name a colour.")]]
    sampling = SamplingConfig(n=3, temperature=0.8, max_new_tokens=12, seed=1)
    generator = TransformersGenerator(base_model.path, batch_rows=8, placement=Placement("cpu", "bfloat16"))
    assert {p.dtype for p in generator._base.parameters()} == {__import__("torch").bfloat16}
    rows = generator.generate(prompts, sampling)
    assert [len(r) for r in rows] == [3, 3]
    assert all(c.num_tokens > 0 and c.text for row in rows for c in row)
    generator.close()
    assert generator._base is None

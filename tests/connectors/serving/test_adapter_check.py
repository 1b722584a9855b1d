"""Pre-flight checks of adapter files, on safetensors files written byte by byte."""

import json
import struct

import pytest

from taoflow.connectors.errors import ArtifactError
from taoflow.connectors.serving.adapter_check import preflight_adapter, safetensors_shapes


def write_safetensors(path, tensors):
    header, offset = {}, 0
    for name, shape in tensors.items():
        size = 4
        for dim in shape:
            size *= dim
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


BASE = {"model.layers.0.self_attn.q_proj.weight": (64, 64), "model.layers.0.mlp.up_proj.weight": (128, 64)}


def lora(tmp_path, *, r=4, shapes=None, config=None):
    directory = tmp_path / "adapter"
    directory.mkdir(exist_ok=True)
    (directory / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": r, **(config or {})}))
    prefix = "base_model.model.model.layers.0."
    write_safetensors(
        directory / "adapter_model.safetensors",
        shapes
        or {
            prefix + "self_attn.q_proj.lora_A.weight": (r, 64),
            prefix + "self_attn.q_proj.lora_B.weight": (64, r),
            prefix + "mlp.up_proj.lora_A.weight": (r, 64),
            prefix + "mlp.up_proj.lora_B.weight": (128, r),
        },
    )
    return directory


def test_a_fitting_adapter_passes(tmp_path):
    assert preflight_adapter(lora(tmp_path), base=BASE, max_rank=16)["r"] == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 32}, "rank 32 exceeds"),
        ({"config": {"rank_pattern": {"q_proj": 64}}}, "rank 64 exceeds"),
        ({"shapes": {"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": (96, 4)}}, "different base"),
        ({"shapes": {"base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight": (4, 64)}}, "does not have"),
    ],
)
def test_misfits_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ArtifactError, match=message):
        preflight_adapter(lora(tmp_path, **kwargs), base=BASE, max_rank=16)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: b + b"\0" * 8, "truncated or padded"),
        (lambda b: b"\xff" * 16, "not a safetensors file"),
        (lambda b: struct.pack("<Q", 5) + b"{nope", "unreadable"),
        (lambda b: b"", "not a safetensors file"),
    ],
)
def test_corrupt_weight_files_are_refused(tmp_path, mangle, message):
    weights = lora(tmp_path) / "adapter_model.safetensors"
    weights.write_bytes(mangle(weights.read_bytes()))
    with pytest.raises(ArtifactError, match=message):
        safetensors_shapes(weights)

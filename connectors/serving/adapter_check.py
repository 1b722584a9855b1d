"""Checks an adapter before any replica serves it: format, rank, and fit to the base model.

A vLLM server refuses some bad adapters itself, but only after one was sent to a replica;
these checks read the files (safetensors headers, never the tensors, so no torch) and
refuse with a message that says which file and what is wrong.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from taoflow.connectors.artifacts.local import check_adapter_dir
from taoflow.connectors.errors import ArtifactError

__all__ = ["base_shapes", "preflight_adapter", "safetensors_shapes"]

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
_MAX_HEADER = 100 * 1024 * 1024


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header; ArtifactError unless the file is whole and consistent."""
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            (header_len,) = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))
            if size < 8 or header_len > min(size - 8, _MAX_HEADER):
                raise ArtifactError(f"{path} is not a safetensors file (header length {header_len}, file {size} B)")
            header = json.loads(f.read(header_len))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is unreadable as safetensors: {exc}") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: the safetensors header is not a mapping")
    header.pop("__metadata__", None)
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    for name, info in header.items():
        try:
            dtype, shape, (start, stop) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{path}: tensor {name} has a malformed header entry") from None
        count = 1
        for dim in shape:
            count *= dim
        if dtype not in _DTYPE_BYTES or stop - start != count * _DTYPE_BYTES[dtype]:
            raise ArtifactError(f"{path}: tensor {name} ({dtype}, {list(shape)}) does not match its byte range")
        shapes[name] = shape
        end = max(end, int(stop))
    if 8 + header_len + end != size:
        raise ArtifactError(
            f"{path} is truncated or padded: the header describes {end} B of tensors, file holds "
            f"{size - 8 - header_len} B"
        )
    return shapes


def base_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Weight name -> shape of a HF model directory (single or sharded safetensors)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        shapes.update(safetensors_shapes(model_dir / name))
    return shapes


def preflight_adapter(adapter_dir: Path, *, base: dict[str, tuple[int, ...]], max_rank: int) -> dict[str, object]:
    """Refuse an adapter that the fleet cannot serve correctly; return its PEFT config.

    - its rank (or any per-module rank) exceeds the servers' `--max-lora-rank`;
    - its weights file is not a whole safetensors file;
    - a LoRA matrix targets a module the base model lacks, or its shape does not fit that
      module (an adapter trained on another base model).
    """
    config = check_adapter_dir(adapter_dir)
    ranks = [int(str(config.get("r", 0)))]
    rank_pattern = config.get("rank_pattern") or {}
    if isinstance(rank_pattern, dict):
        ranks += [int(v) for v in rank_pattern.values()]
    if max(ranks) > max_rank:
        raise ArtifactError(
            f"{adapter_dir.name}: LoRA rank {max(ranks)} exceeds the fleet's max_lora_rank {max_rank}; train with "
            f"train.lora_rank <= {max_rank} or restart the servers with a larger --max-lora-rank"
        )
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise ArtifactError(f"{adapter_dir.name}: only safetensors adapters are served (adapter_model.safetensors)")
    shapes = safetensors_shapes(weights)
    if not shapes:
        raise ArtifactError(f"{weights} holds no tensors")
    for name, shape in shapes.items():
        _check_fits(adapter_dir.name, name, shape, base)
    return config


def _check_fits(adapter: str, name: str, shape: tuple[int, ...], base: dict[str, tuple[int, ...]]) -> None:
    # PEFT names a matrix base_model.model.<module>.lora_A.weight; the base weight is <module>.weight.
    module, _, kind = name.removeprefix("base_model.model.").rpartition(".lora_")
    target = base.get(f"{module}.weight")
    if target is None:
        raise ArtifactError(f"{adapter}: {name} adapts {module}, which the base model does not have (wrong base?)")
    if len(shape) != 2 or len(target) != 2:
        return  # embeddings and other shapes: vLLM checks those itself
    out_features, in_features = target
    expected = in_features if kind.startswith("A") else out_features
    actual = shape[1] if kind.startswith("A") else shape[0]
    if actual != expected:
        raise ArtifactError(
            f"{adapter}: {name} has shape {list(shape)} but {module} is {list(target)} in the base model "
            "(adapter trained on a different base model)"
        )

"""Where the round's model runs and in which precision: `model.device` and `model.dtype` made concrete.

`auto` picks the first GPU torch sees, else the CPU; the dtype `auto` is bfloat16 on a GPU that supports it and
float32 elsewhere (the CPU's bfloat16 kernels are slower than float32 on most server CPUs, and the demo must not
get slower). A device the machine does not have is a setup error that says what torch sees, never a silent fall
back to the CPU: a round that quietly runs a 70B model on CPU cores is the failure this module exists to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError, RoundError

__all__ = [
    "Placement",
    "check_free_memory",
    "release_accelerator",
    "resolve_placement",
    "visible_gpus",
    "weights_bytes",
]

_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Placement:
    """A concrete device (`cpu`, `cuda:0`, …) and dtype name (`float32`, `bfloat16`, `float16`)."""

    device: str
    dtype: str

    @property
    def on_accelerator(self) -> bool:
        return self.device != "cpu"

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)


def resolve_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """`device`: auto | cpu | cuda | cuda:N; `dtype`: auto | float32 | bfloat16 | float16."""
    import torch

    concrete = _device(device, torch)
    if dtype == "auto":
        bf16 = concrete != "cpu" and torch.cuda.is_bf16_supported()
        return Placement(concrete, "bfloat16" if bf16 else "float32")
    if dtype not in _DTYPES:
        raise ConfigurationError(f"model.dtype {dtype!r} is not one of auto, {', '.join(_DTYPES)}")
    return Placement(concrete, dtype)


def visible_gpus() -> int:
    """GPUs this process may use (CUDA_VISIBLE_DEVICES applied)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _device(device: str, torch: Any) -> str:
    if device == "cpu":
        return "cpu"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return "cuda:0" if gpus else "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        index = 0 if device == "cuda" else _index(device)
        if index >= gpus:
            seen = f"{gpus} GPU(s)" if gpus else f"no GPU (torch {torch.__version__}, CUDA build: {torch.version.cuda})"
            raise ConfigurationError(
                f"model.device is {device!r} but torch sees {seen}; set model.device to auto or cpu, or run the "
                "round where that GPU is visible (CUDA_VISIBLE_DEVICES, the pod's GPU request)"
            )
        return f"cuda:{index}"
    raise ConfigurationError(f"model.device {device!r} is not one of auto, cpu, cuda, cuda:N")


def _index(device: str) -> int:
    suffix = device.partition(":")[2]
    if not suffix.isdigit():
        raise ConfigurationError(f"model.device {device!r}: the GPU index after 'cuda:' must be a number")
    return int(suffix)


def weights_bytes(model_dir: Path, dtype: str) -> int:
    """The base model's weights in `dtype`, from its safetensors headers (no tensor is read)."""
    import json
    import math
    import struct

    width = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
    elements = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, entry in header.items():
            # Only floating-point tensors are cast to the model's dtype; integer buffers are a rounding error.
            if name != "__metadata__" and entry["dtype"] in {"F64", "F32", "BF16", "F16"}:
                elements += math.prod(entry["shape"])
    return elements * width


def check_free_memory(placement: Placement, needed: int, *, what: str) -> None:
    """Fail before a step when the GPU has less free memory than `needed` bytes, with what to change."""
    if not placement.on_accelerator:
        return
    import torch

    free, total = torch.cuda.mem_get_info(torch.device(placement.device))
    if free < needed:
        gib = 1 << 30
        raise RoundError(
            f"{what} needs about {needed / gib:.1f} GiB on {placement.device} but {free / gib:.1f} of "
            f"{total / gib:.1f} GiB are free; something else holds the GPU (another process, or a generation "
            "engine that was not freed), or the model is too large for one GPU: set train.num_processes and "
            "train.fsdp to shard it, or train.gradient_checkpointing to trade compute for activations"
        )


def release_accelerator() -> None:
    """Return freed tensors' memory to the device (after a generator or engine is dropped)."""
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()

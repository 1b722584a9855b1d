"""The base model, its served name, and where a round's model runs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from taoflow.daemon.settings.base import Section

__all__ = ["ModelSettings"]


class ModelSettings(Section):
    base: str = "smollm2-135m-instruct"
    """Base model: a built-in name (`smollm2-135m-instruct`) or a local HF model directory."""
    cache_dir: Path = Path("~/.cache/taoflow/models")
    """Where built-in models are converted to HF format once and reused."""
    served_name: str = Field("taoflow", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    """The name the adapter lineage is registered (and later served) under."""
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:[0-9]{1,2})$")
    """Where the round's generation, gate evaluation and training run: `auto` (the first GPU torch sees, else the
    CPU), `cpu`, `cuda` or `cuda:N`. A GPU the machine lacks is an error, never a silent fall back to the CPU."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' precision: `auto` is bfloat16 on GPUs that support it, float32 on the CPU (where bfloat16 kernels
    are slower). Training in bfloat16/float16 keeps the LoRA weights in float32 (mixed precision)."""

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
    tool_call_parser: Literal["none", "hermes", "llama3_json"] = "none"
    """How the model writes a tool call, so a round can learn from agent traffic: `hermes` (`<tool_call>` blocks:
    Qwen, Hermes, the built-in `chatml-tools` template), `llama3_json` (a JSON object: Llama 3.1+). `none`: rounds do
    not learn tool use, and ingest skips prompts that offer tools or hold calls (counted as `unsupported_tools`)
    rather than store what a round would train toward text answers. With a parser, the chat template must render
    tools (checked when a round starts); see `chat_template`."""
    chat_template: str | None = None
    """A chat template used instead of the model's own, for generation, training and the gate: a Jinja file, or
    the built-in `chatml-tools` (ChatML with Hermes-style tools, for the built-in SmolLM2, whose template drops
    tools). Serving replicas must be started with the same template (vLLM `--chat-template`)."""

"""Candidate generation with vLLM's offline engine, where vLLM is installed (GPU nodes).

One engine per process, created with LoRA enabled so that the champion adapter can
generate the next round's candidates; adapters get stable integer ids per path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.protocols import Completion, Progress, SamplingConfig
from taoflow.connectors.records import Message

__all__ = ["VllmGenerator"]


class VllmGenerator:
    """A `Generator` over `vllm.LLM`, with LoRA adapters passed per request."""

    def __init__(self, model_dir: Path, *, max_lora_rank: int = 16, seed: int = 0, **engine_args: Any) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ConfigurationError(
                f"generate.backend is 'vllm' but vLLM cannot be imported ({exc}); install vllm on this node "
                "or set generate.backend: transformers"
            ) from None
        self._llm = LLM(
            model=str(model_dir),
            enable_lora=True,
            max_lora_rank=max_lora_rank,
            max_loras=2,
            seed=seed,
            **engine_args,
        )
        self._lora_ids: dict[str, int] = {}

    def generate(
        self,
        conversations: Sequence[Sequence[Message]],
        sampling: SamplingConfig,
        *,
        adapter: Path | None = None,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
        )
        outputs = self._llm.chat(
            [[m.as_dict() for m in c] for c in conversations],
            params,
            lora_request=self._lora(adapter),
            use_tqdm=False,
        )
        if progress is not None:
            progress(len(conversations))
        return [
            [
                Completion(text=o.text.strip(), num_tokens=len(o.token_ids), finished=o.finish_reason == "stop")
                for o in request.outputs
            ]
            for request in outputs
        ]

    def _lora(self, adapter: Path | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        key = str(adapter.resolve())
        lora_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter-{lora_id}", lora_id, key)

"""Candidate generation and the gate's evaluation with vLLM's offline engine, where vLLM is installed (GPU nodes).

One engine per round process, created with LoRA enabled: the champion adapter generates the next round's
candidates and the gate evaluates the champion and the new adapter through the same engine, each adapter a
`LoRARequest` with a stable integer id per path. `close()` shuts the engine down so that training gets the GPU.
Written to vLLM 0.32's documented `LLM` API; tested with its CPU build (`tests/e2e/test_vllm_backend.py`).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.protocols import Completion, Progress, SamplingConfig
from taoflow.connectors.records import Chat, Message, as_chat, canonical_json

__all__ = ["LORA_RANKS", "VllmGenerator", "supported_rank"]

#: How long a shut-down engine's processes get to exit before they are killed.
_ENGINE_EXIT_S = 30.0

#: The LoRA ranks a vLLM engine can be built for (`max_lora_rank`).
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def supported_rank(rank: int) -> int:
    """The smallest rank vLLM accepts as `max_lora_rank` that holds adapters of `rank`."""
    for allowed in LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ConfigurationError(f"LoRA rank {rank} exceeds the largest vLLM supports ({LORA_RANKS[-1]})")


class VllmGenerator:
    """A `Generator` over `vllm.LLM`, with LoRA adapters passed per request."""

    def __init__(
        self,
        model_dir: Path,
        *,
        max_lora_rank: int = 16,
        seed: int = 0,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        enable_prefix_caching: bool = True,
        enforce_eager: bool = False,
        chat_template: str | None = None,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ConfigurationError(
                f"generate.backend is 'vllm' but vLLM cannot be imported ({exc}); install vllm on this node "
                "or set generate.backend: transformers"
            ) from None
        before = {p.pid for p in multiprocessing.active_children()}
        self._llm: Any = LLM(
            model=str(model_dir),
            enable_lora=True,
            max_lora_rank=supported_rank(max_lora_rank),
            max_loras=2,  # the gate's two sides: champion and candidate
            seed=seed,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            enforce_eager=enforce_eager,
        )
        self._engine_processes = [p for p in multiprocessing.active_children() if p.pid not in before]
        self._lora_ids: dict[str, int] = {}
        self._chat_template = chat_template
        from vllm.platforms import current_platform

        # vLLM's CPU build cannot rewind a seeded request's generator when it splits a prompt over steps (chunked
        # prefill: "CPU Generator does not use offset", the engine dies); there the engine's seed alone makes the
        # run reproducible. On GPUs each prompt gets its own seed.
        self._seed_requests = not current_platform.is_cpu()

    def generate(
        self,
        conversations: Sequence[Chat | Sequence[Message]],
        sampling: SamplingConfig,
        *,
        adapter: Path | None = None,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        from vllm import SamplingParams

        # vLLM refuses n > 1 with greedy decoding, and greedy answers are all alike: ask once, repeat.
        greedy = sampling.temperature == 0.0
        per_prompt = [
            SamplingParams(
                n=1 if greedy else sampling.n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_new_tokens,
                # One seed for all would make every prompt's samples draw alike.
                seed=sampling.seed + index if self._seed_requests else None,
            )
            for index in range(len(conversations))
        ]
        chats = [as_chat(c) for c in conversations]
        # LLM.chat takes one list of tools for all its conversations: conversations that offer the same tools (most
        # offer none) are asked together.
        groups: dict[str, list[int]] = {}
        for index, chat in enumerate(chats):
            groups.setdefault(canonical_json(chat.template_tools()), []).append(index)
        outputs: list[Any] = [None] * len(chats)
        for rows in groups.values():
            answered = self._llm.chat(
                [chats[i].template_messages() for i in rows],
                [per_prompt[i] for i in rows],
                lora_request=self._lora(adapter),
                use_tqdm=False,
                chat_template=self._chat_template,
                tools=chats[rows[0]].template_tools(),
            )
            for i, request in zip(rows, answered, strict=True):
                outputs[i] = request
        if progress is not None:
            progress(len(conversations))
        results = []
        for request in outputs:
            row = [
                Completion(text=o.text.strip(), num_tokens=len(o.token_ids), finished=o.finish_reason == "stop")
                for o in request.outputs
            ]
            results.append(row * sampling.n if greedy else row)
        return results

    def close(self) -> None:
        """Shut the engine down (its worker processes and their memory), then the distributed state it set up."""
        if self._llm is None:
            return
        self._llm.llm_engine.engine_core.shutdown()
        self._llm = None
        # The engine's memory is free once its processes have exited, which shutdown does not wait for.
        deadline = time.monotonic() + _ENGINE_EXIT_S
        for process in self._engine_processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()

    def _lora(self, adapter: Path | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        key = str(adapter.resolve())
        lora_id = self._lora_ids.setdefault(key, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter-{lora_id}", lora_id, key)

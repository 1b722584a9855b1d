"""GRPO through TRL's `GRPOTrainer`: the policy samples a group of answers per prompt during training, the
task's scorers reward them, and the group's relative advantage steers the LoRA adapter.

Generation inside the trainer runs on transformers (vLLM's colocated engine where the `vllm` package and a GPU
are present). A reward the scorers cannot give (None: unscored) is passed as None, which TRL leaves out of the
advantage rather than reading as zero.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

from taoflow.connectors.records import PromptRecord

__all__ = ["RewardFunction", "grpo_trainer"]

#: GRPO's rewards: the round's scorers over (prompt, answer) pairs of one generation batch (None: unscored).
RewardFunction = Callable[[Sequence[PromptRecord], Sequence[str]], list[float | None]]


def grpo_trainer(
    model: Any,
    tokenizer: Any,
    records: Sequence[PromptRecord],
    common: dict[str, Any],
    *,
    batch_size: int,
    generations: int,
    max_completion_tokens: int,
    temperature: float,
    beta: float,
    reward: RewardFunction,
    lora: Any,
) -> Any:
    """`common`: the trainer arguments every objective shares (lora.trainer_arguments)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rows = [{"prompt": [m.as_dict() for m in r.messages], "record": r.to_json()} for r in records]
    # A generation batch must hold whole groups: the per-device batch is a multiple of the group size.
    per_device = generations * max(1, batch_size // generations)
    args = GRPOConfig(
        **common,
        per_device_train_batch_size=per_device,
        num_generations=generations,
        max_completion_length=max_completion_tokens,
        temperature=temperature,
        beta=beta,
        use_vllm=_vllm_colocated(),
        shuffle_dataset=True,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=[_reward_with(reward)],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
    )


def _reward_with(reward: RewardFunction) -> Any:
    def taoflow_scorers(prompts: list[Any], completions: list[Any], record: list[str], **_: Any) -> list[float | None]:
        records = [PromptRecord.from_json(r) for r in record]
        answers = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        return reward(records, answers)

    return taoflow_scorers


def _vllm_colocated() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())

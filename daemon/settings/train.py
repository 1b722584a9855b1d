"""Adapter training: the objective, which candidates it learns from, LoRA and optimiser, where it starts.

Each objective's own options are a section of their own (`train.dpo`, `train.grpo`), as TRL keeps a config
beside each trainer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from taoflow.daemon.settings.base import Section

__all__ = ["DpoSettings", "GrpoSettings", "TrainSettings"]


class DpoSettings(Section):
    """DPO on the best and worst candidates of a prompt."""

    margin: float = Field(0.5, ge=0.0, le=1.0)
    """The best candidate must beat the worst by this much to form a pair."""
    beta: float = Field(0.1, gt=0.0)
    """KL strength."""


class GrpoSettings(Section):
    """GRPO: the policy samples answers while it trains, rewarded by the task's scorers."""

    generations: int = Field(4, ge=2, le=64)
    """Answers sampled per prompt at each step (the group its advantages are relative to)."""
    max_completion_tokens: int = Field(48, ge=1)
    """Longest sampled answer."""
    temperature: float = Field(0.8, gt=0.0)
    """Sampling temperature during training."""
    beta: float = Field(0.0, ge=0.0)
    """KL penalty against the base model (0 loads no reference model)."""


class TrainSettings(Section):
    objective: Literal["sft", "dpo", "grpo"] = "sft"
    """`sft`: best-of-N distillation; `dpo`: preference pairs of best and worst candidates; `grpo`: the policy
    samples grpo.generations answers per prompt while it trains, rewarded by the task's scorers (prompts whose
    round candidates all scored alike are left out: their group advantage is zero)."""
    selection: Literal["auto", "threshold", "relative"] = "auto"
    """Which candidates are worth learning from. `threshold`: those scoring at least score_threshold (verifiers
    that score 0 or 1); `relative`: those beating their prompt's group mean by relative_margin and scoring at least
    score_floor (a judge or a reward model, whose continuous scores rarely reach a fixed bar); `auto`: per task,
    from the round's candidates: threshold for 0/1 scores or where it keeps a quarter of the prompts (or as many as
    relative), relative for graded or continuous scores that seldom reach score_threshold (recorded with why)."""
    score_threshold: float = Field(0.99, ge=0.0, le=1.0)
    """`threshold` selection: SFT trains on candidates scoring at least this; DPO's chosen answer must too."""
    relative_margin: float = Field(0.1, ge=0.0, le=1.0)
    """`relative` selection: how far above its group's mean score a candidate must be to be imitated."""
    score_floor: float = Field(0.0, ge=0.0, le=1.0)
    """`relative` selection: the least absolute score a kept candidate (or DPO's chosen answer) must have."""
    targets_per_prompt: int = Field(2, ge=1)
    """SFT: distinct top candidates used per prompt."""
    lora_rank: int = Field(16, ge=1, le=256)
    """LoRA rank (vLLM servers must allow at least this with --max-lora-rank)."""
    lora_alpha: int = Field(32, ge=1)
    """LoRA scaling numerator."""
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """LoRA dropout."""
    learning_rate: float = Field(1e-3, gt=0.0)
    """Peak learning rate (cosine decay)."""
    epochs: float = Field(3.0, gt=0.0)
    """Passes over the selected examples."""
    batch_size: int = Field(16, ge=1)
    """Examples per optimiser step (per device)."""
    max_length: int = Field(256, ge=16)
    """Prompt plus answer tokens; longer examples are truncated."""
    save_steps: int = Field(20, ge=1)
    """Checkpoint interval in optimiser steps (an interrupted round resumes from the last)."""
    seed: int = 0
    """Training seed."""
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    """Micro-batches of batch_size per optimiser step (a larger effective batch in the same memory)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them: less memory, ~30% more compute."""
    num_processes: int = Field(0, ge=0, le=1024)
    """Training processes (data parallel, through `accelerate launch`): 0 is one per visible GPU (one on the CPU);
    more than one on a CPU runs gloo processes, which is how the launch path is tested."""
    fsdp: bool = False
    """With several processes, shard weights, gradients and optimiser state (FSDP) instead of copying them: for
    models that do not fit one GPU."""
    replay: int = Field(64, ge=0, le=100_000)
    """Examples of the rounds behind the champion (its round's, then its parent's, ...) trained on again beside the
    round's own, a seeded sample when there are more: a round with a few new examples does not pull the adapter
    towards those alone. 0: a round trains on its own examples only."""
    dpo: DpoSettings = DpoSettings()
    """`dpo` objective: how pairs are formed and how hard the policy is held to the base model."""
    grpo: GrpoSettings = GrpoSettings()
    """`grpo` objective: the answers sampled while training."""
    init: Literal["champion", "base"] = "champion"
    """Where a round's adapter starts: `champion` continues the champion adapter's weights (its rank and target
    modules kept), so successive rounds on new prompts accumulate; `base` trains a fresh adapter each round. With no
    champion yet, a fresh one. (DPO's reference model is the base model either way.)"""

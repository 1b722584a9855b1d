"""Which prompts are held out for evaluation: a pure function of the prompt's hash."""

from __future__ import annotations

from typing import Literal

__all__ = ["Split", "assign_split"]

Split = Literal["train", "heldout"]


def assign_split(prompt_hash: str, *, heldout_fraction: float, heldout_count: int, heldout_max: int) -> Split:
    """Hold out a stable `heldout_fraction` of prompts, up to `heldout_max` per task.

    The bucket comes from the prompt's own hash, so the same prompt lands in the same split
    on every replica and every replay, and a held-out prompt can never drift into training.
    """
    if heldout_fraction <= 0 or heldout_count >= heldout_max:
        return "train"
    bucket = int(prompt_hash[:8], 16) / 0x1_0000_0000
    return "heldout" if bucket < heldout_fraction else "train"

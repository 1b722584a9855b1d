"""The eval gate: what a new adapter must show against the champion on held-out prompts."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from taoflow.daemon.settings.base import Section
from taoflow.daemon.settings.score import ScorerSpec

__all__ = ["GateSettings"]


class GateSettings(Section):
    min_mean_improvement: float = 0.0
    """Candidate's mean held-out score must beat the champion's by at least this."""
    max_slice_regression: float = Field(0.05, ge=0.0)
    """No task's mean may drop by more than this."""
    min_samples: int = Field(16, ge=1)
    """Fewest held-out prompts (all tasks) for a decision; fewer rejects the candidate."""
    min_slice_samples: int = Field(4, ge=1)
    """Tasks with fewer held-out prompts are not judged for regression (too noisy)."""
    max_new_tokens: int = Field(96, ge=1)
    """Longest greedy answer during evaluation."""
    golden_file: Path | None = None
    """Optional labelled JSONL (`messages`, `task`, `expected`) checked the same way; relative to the config file."""
    confidence: float = Field(0.9, ge=0.0, lt=1.0)
    """Pass only when the improvement clears min_mean_improvement beyond noise at this confidence: the bootstrap
    lower bound of the paired mean change, and (for a minimum of 0 or more) a sign test over the prompts that
    changed. 0 judges the means alone."""
    bootstrap_samples: int = Field(2000, ge=100, le=100_000)
    """Resamples of the held-out prompts for the confidence bound (seeded: the same scores give the same decision)."""
    scorers: dict[str, list[ScorerSpec]] = Field(default_factory=dict)
    """Per task, scorers the gate judges with instead of the training ones (e.g. a stronger judge, or the
    verifiers): a policy trained against one scorer can raise its score while an independent one falls. The round's
    gate table shows both."""

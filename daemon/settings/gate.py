"""The eval gate: what a new adapter must show against the champion on held-out prompts."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from taoflow.daemon.settings.base import Section
from taoflow.daemon.settings.score import ScorerSpec

__all__ = ["GateSettings", "MonitorSettings"]


class MonitorSettings(Section):
    """Scorer-gaming monitors on every round's gate and every shadow deploy: each blocks promotion with its reason."""

    enabled: bool = True
    """Run the monitors (they only ever block; off, the gate's statistics decide alone)."""
    max_length_ratio: float = Field(1.5, gt=0)
    """The candidate's mean answer length may be at most this many times the champion's (a judge's favourite)."""
    max_refusal_increase: float = Field(0.1, ge=0.0, le=1.0)
    """The candidate may decline at most this larger a share of prompts than the champion (a verifier cannot fail
    an answer that does not try)."""
    max_scorer_divergence: float = Field(0.1, ge=0.0)
    """With gate.scorers set: block when the training scorers' improvement exceeds the gate scorers' by more than
    this while the gate scorers stay flat or fall."""
    max_position_bias: float = Field(0.2, ge=0.0, le=1.0)
    """Shadow deploys: block when the scorers, shown each pair in both orders, score an answer this much higher
    first than second (the pair's scores average both orders, but so biased a judge cannot be trusted)."""
    min_answers: int = Field(8, ge=1)
    """Fewest answers per side before the length and refusal monitors judge."""


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
    monitors: MonitorSettings = MonitorSettings()
    """Scorer-gaming monitors (answer length, refusals, training vs gate scorers, a judge's position bias)."""
    scorers: dict[str, list[ScorerSpec]] = Field(default_factory=dict)
    """Per task, scorers the gate judges with instead of the training ones (e.g. a stronger judge, or the
    verifiers): a policy trained against one scorer can raise its score while an independent one falls. The round's
    gate table shows both."""

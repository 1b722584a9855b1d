"""The eval gate: does a candidate adapter beat the live one on held-out prompts?

A purely computational function with no side-effects: per-task score summaries of
both models in, a frozen `GateDecision` with a human-readable reason out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["GateDecision", "GatePolicy", "SliceScores", "decide_gate"]


@dataclass(frozen=True)
class SliceScores:
    """Mean held-out scores of candidate and champion on one task slice (same prompts)."""

    task: str
    n: int
    candidate_mean: float
    champion_mean: float

    @property
    def delta(self) -> float:
        return self.candidate_mean - self.champion_mean


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the gate (mirrors the `gate` settings section)."""

    min_mean_improvement: float = 0.0
    max_slice_regression: float = 0.05
    min_samples: int = 16
    min_slice_samples: int = 4


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    outcome: str  # a small fixed set, usable as a metric label
    n: int
    candidate_mean: float
    champion_mean: float
    slices: tuple[SliceScores, ...] = ()
    golden: tuple[SliceScores, ...] = ()

    @property
    def mean_improvement(self) -> float:
        return self.candidate_mean - self.champion_mean


def _micro_mean(slices: Sequence[SliceScores], attr: str) -> float:
    total = sum(s.n for s in slices)
    return sum(getattr(s, attr) * s.n for s in slices) / total if total else 0.0


def _worst(slices: Sequence[SliceScores], policy: GatePolicy) -> SliceScores | None:
    judged = [s for s in slices if s.n >= policy.min_slice_samples]
    return min(judged, key=lambda s: s.delta, default=None)


def decide_gate(
    slices: Sequence[SliceScores], policy: GatePolicy, *, golden: Sequence[SliceScores] = ()
) -> GateDecision:
    """Pass when there are enough samples, the mean improves enough and no slice regresses too far."""
    n = sum(s.n for s in slices)
    cand, champ = _micro_mean(slices, "candidate_mean"), _micro_mean(slices, "champion_mean")

    def decision(passed: bool, outcome: str, reason: str) -> GateDecision:
        return GateDecision(passed, reason, outcome, n, cand, champ, tuple(slices), tuple(golden))

    if n < policy.min_samples:
        return decision(False, "too_few_samples", f"{n} held-out prompts < min_samples {policy.min_samples}")
    for label, group in (("held-out", slices), ("golden", golden)):
        worst = _worst(group, policy)
        if worst is not None and -worst.delta > policy.max_slice_regression:
            return decision(
                False,
                "slice_regression",
                f"{label} task {worst.task!r} regressed {worst.champion_mean:.3f} -> "
                f"{worst.candidate_mean:.3f} (max allowed drop {policy.max_slice_regression:.3f})",
            )
    improvement = cand - champ
    if improvement < policy.min_mean_improvement:
        return decision(
            False,
            "insufficient_improvement",
            f"mean {champ:.3f} -> {cand:.3f} (+{improvement:.3f}) is below "
            f"min_mean_improvement {policy.min_mean_improvement:.3f}",
        )
    return decision(
        True,
        "passed",
        f"mean {champ:.3f} -> {cand:.3f} (+{improvement:.3f}) on {n} prompts, no slice regressed "
        f"more than {policy.max_slice_regression:.3f}",
    )

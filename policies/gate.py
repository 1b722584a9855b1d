"""The eval gate: does a candidate adapter beat the live one on held-out prompts?

A purely computational function with no side-effects: per-task score summaries of
both models in, a frozen `GateDecision` with a human-readable reason out.

Held-out sets are small and a mean moves when one prompt's answer changes, so the gate
asks whether the improvement is *larger than noise*: over the paired per-prompt changes
(candidate - champion on the same prompt) it takes a bootstrap lower bound of the mean
improvement at `confidence`, and, when it is asked for an improvement (a minimum of zero
or more), an exact sign test over the prompts whose score changed. Both must clear the
bar. The bootstrap draws from a seeded generator, so the same scores give the same
decision.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["GateDecision", "GatePolicy", "Noise", "SliceScores", "decide_gate", "measure_noise", "min_prompts_for"]


@dataclass(frozen=True)
class SliceScores:
    """Mean held-out scores of candidate and champion on one task slice (same prompts)."""

    task: str
    n: int
    candidate_mean: float
    champion_mean: float
    deltas: tuple[float, ...] = ()
    """Per-prompt candidate - champion scores, paired (the gate's noise check needs them)."""
    left_out: int = 0
    """Prompts left out of the comparison: an answer on one side or the other could not be scored."""

    @property
    def delta(self) -> float:
        return self.candidate_mean - self.champion_mean

    @property
    def changed(self) -> int:
        return sum(d != 0.0 for d in self.deltas)


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the gate (mirrors the `gate` settings section)."""

    min_mean_improvement: float = 0.0
    max_slice_regression: float = 0.05
    min_samples: int = 16
    min_slice_samples: int = 4
    confidence: float = 0.9
    """0 judges the means alone (a smoke check); above 0 the improvement must clear the bar beyond noise."""
    bootstrap_samples: int = 2000
    seed: int = 0


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
    noise: Noise | None = None

    @property
    def mean_improvement(self) -> float:
        return self.candidate_mean - self.champion_mean


@dataclass(frozen=True)
class Noise:
    """How far the held-out improvement stands above noise."""

    confidence: float
    lower: float  # bootstrap bound: the mean improvement is at least this with `confidence`
    upper: float  # ... and at most this
    improved: int  # prompts whose score rose
    worsened: int  # ... and fell
    p_value: float  # exact one-sided sign test over the changed prompts (improved vs worsened)

    def describe(self) -> str:
        pct = f"{self.confidence:.0%}"
        return (
            f"{pct} bounds [{self.lower:+.3f}, {self.upper:+.3f}], {self.improved + self.worsened} prompts changed "
            f"({self.improved} up, {self.worsened} down, sign test p={self.p_value:.3f})"
        )


def min_prompts_for(confidence: float) -> int:
    """The fewest prompts that can show an improvement at `confidence` even if every one improved."""
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log(0.5))) if confidence > 0 else 1


def measure_noise(deltas: Sequence[float], *, confidence: float, samples: int, seed: int) -> Noise:
    """Bootstrap bounds of the mean of paired deltas, and the sign test of their signs."""
    rng = random.Random(seed)
    n = len(deltas)
    if any(deltas):
        means = sorted(math.fsum(rng.choices(deltas, k=n)) / n for _ in range(samples))
        lower = means[min(samples - 1, int((1.0 - confidence) * samples))]
        upper = means[max(0, math.ceil(confidence * samples) - 1)]
    else:
        lower = upper = 0.0
    improved, worsened = sum(d > 0 for d in deltas), sum(d < 0 for d in deltas)
    return Noise(confidence, lower, upper, improved, worsened, _sign_test(improved, improved + worsened))


def _sign_test(successes: int, trials: int) -> float:
    """P(at least `successes` of `trials` fair coin flips come up heads): one-sided, exact."""
    if trials == 0:
        return 1.0
    return math.fsum(math.comb(trials, k) for k in range(successes, trials + 1)) / 2.0**trials


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

    def decision(passed: bool, outcome: str, reason: str, noise: Noise | None = None) -> GateDecision:
        return GateDecision(passed, reason, outcome, n, cand, champ, tuple(slices), tuple(golden), noise)

    if n < policy.min_samples:
        reason = f"{n} held-out prompts < min_samples {policy.min_samples}"
        if left_out := sum(s.left_out for s in slices):
            reason += (
                f" ({left_out} left out: no score for an answer on one side or both; a scorer that votes among"
                " several answers, self-consistency, cannot score the gate's one greedy answer: set gate.scorers)"
            )
        return decision(False, "too_few_samples", reason)
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
            f"mean {champ:.3f} -> {cand:.3f} ({improvement:+.3f}) is below "
            f"min_mean_improvement {policy.min_mean_improvement:.3f}",
        )
    summary = f"mean {champ:.3f} -> {cand:.3f} ({improvement:+.3f}) on {n} prompts"
    if policy.confidence > 0:
        return _beyond_noise(slices, policy, summary, decision)
    return decision(True, "passed", f"{summary}, no slice regressed more than {policy.max_slice_regression:.3f}")


def _beyond_noise(
    slices: Sequence[SliceScores], policy: GatePolicy, summary: str, decision: Callable[..., GateDecision]
) -> GateDecision:
    deltas = [d for s in slices for d in s.deltas]
    if len(deltas) != sum(s.n for s in slices):
        raise ValueError("the gate's noise check needs every held-out prompt's paired delta (SliceScores.deltas)")
    bar = policy.min_mean_improvement
    # The fewest prompts that can show an improvement comes from the sign test, which only a bar of 0 or more
    # asks for; a negative bar ("not worse by more than ...") is the bootstrap bound's alone.
    needed = min_prompts_for(policy.confidence) if bar >= 0 else 1
    if len(deltas) < needed:
        return decision(
            False,
            "too_few_for_confidence",
            f"{len(deltas)} held-out prompts cannot show an improvement at confidence {policy.confidence:.0%} "
            f"(needs at least {needed}); add held-out prompts or lower gate.confidence",
        )
    noise = measure_noise(deltas, confidence=policy.confidence, samples=policy.bootstrap_samples, seed=policy.seed)
    within = noise.lower <= bar or (bar >= 0 and noise.p_value > 1.0 - policy.confidence)
    if within:
        return decision(
            False,
            "within_noise",
            f"{summary}: not above min_mean_improvement {bar:.3f} beyond noise ({noise.describe()})",
            noise,
        )
    return decision(
        True,
        "passed",
        f"{summary}, above {bar:.3f} beyond noise ({noise.describe()}), "
        f"no slice regressed more than {policy.max_slice_regression:.3f}",
        noise,
    )

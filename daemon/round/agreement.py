"""Is a scorer trustworthy before it drives training? Each configured scorer of a task judged on the same
candidates, beside a reference (a golden set's labels, or a verifier of the task): rank correlation, pairwise
accuracy within a prompt's candidates, length bias, and a relative judge's position bias.

`taoflow scorers check` prints this (daemon/cli/commands.py); the statistics here are pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from taoflow.policies.selection import ScoreShape, score_shape

__all__ = ["Calibration", "ScorerReport", "calibrate", "pairwise_accuracy", "report", "spearman"]

#: Per prompt, the scores one scorer gave its candidates (None: unscored), in the candidates' order.
Groups = Sequence[Sequence[float | None]]


@dataclass(frozen=True)
class ScorerReport:
    """One scorer of one task, against the reference where there is one."""

    task: str
    scorer: str
    scored: int
    unscored: int
    mean: float | None
    rank_correlation: float | None  # Spearman against the reference over every candidate both scored
    pairwise_accuracy: float | None  # share of a prompt's candidate pairs the reference orders that it orders alike
    pairs: int
    length_correlation: float | None  # Spearman of score with answer length: a judge that likes long answers
    position_means: tuple[float | None, ...] = ()
    prompts: int = 0
    flat_prompts: int = 0  # prompts whose candidates it scored all alike
    calibration: Calibration | None = None  # the threshold that best tells the reference's good answers from bad

    @property
    def saturated(self) -> bool:
        """It scores nearly every prompt's candidates alike: no signal to learn from, whatever its mean."""
        return ScoreShape("", (), self.flat_prompts, self.prompts).saturated


@dataclass(frozen=True)
class Calibration:
    """Where a scorer's scores best split the answers the reference calls good (at least `good_at`) from the rest:
    the threshold a round's selection should use with it, and how often that split agrees with the reference
    (balanced accuracy: the mean of the shares of good and of bad answers it puts on the right side)."""

    threshold: float
    balanced_accuracy: float
    good: int
    bad: int


def calibrate(scores: Groups, reference: Groups, *, good_at: float = 0.5) -> Calibration | None:
    """The threshold `t` (one of the scorer's own scores) for which "score >= t" agrees best with the reference's
    "label >= good_at"; the highest such `t` on a tie (the stricter bar). None without good and bad answers both."""
    both = [(v, t >= good_at) for v, t in _paired(scores, reference)]
    good = sum(1 for _, ok in both if ok)
    bad = len(both) - good
    if not good or not bad:
        return None
    best: Calibration | None = None
    for threshold in sorted({v for v, _ in both}, reverse=True):
        passed_good = sum(1 for v, ok in both if ok and v >= threshold)
        failed_bad = sum(1 for v, ok in both if not ok and v < threshold)
        accuracy = (passed_good / good + failed_bad / bad) / 2
        if best is None or accuracy > best.balanced_accuracy:
            best = Calibration(threshold, accuracy, good, bad)
    return best


def _paired(scores: Groups, reference: Groups) -> list[tuple[float, float]]:
    """Every candidate's (score, reference) where both scored it."""
    return [
        (v, t)
        for g, r in zip(scores, reference, strict=True)
        for v, t in zip(g, r, strict=True)
        if v is not None and t is not None
    ]


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Rank correlation (ties take their mean rank); None when either side is constant or too short."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None
    rx, ry = _ranks(xs), _ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else None


def pairwise_accuracy(scores: Groups, reference: Groups) -> tuple[float | None, int]:
    """Over pairs of one prompt's candidates that the reference tells apart, the share this scorer orders the
    same way (a tie counts half), and how many such pairs there were."""
    agree, pairs = 0.0, 0
    for mine, truth in zip(scores, reference, strict=True):
        for i in range(len(truth)):
            for j in range(i + 1, len(truth)):
                a, b, ta, tb = mine[i], mine[j], truth[i], truth[j]
                if None in (a, b, ta, tb) or ta == tb:
                    continue
                pairs += 1
                if a == b:
                    agree += 0.5
                elif (a > b) == (ta > tb):  # type: ignore[operator]
                    agree += 1.0
    return (agree / pairs if pairs else None), pairs


def report(
    task: str,
    scorer: str,
    scores: Groups,
    *,
    lengths: Sequence[Sequence[int]],
    reference: Groups | None = None,
    position_means: Sequence[float | None] = (),
) -> ScorerReport:
    flat = [v for g in scores for v in g]
    values = [v for v in flat if v is not None]
    with_length = [(v, n) for g, ns in zip(scores, lengths, strict=True) for v, n in zip(g, ns, strict=True)]
    length_rho = spearman([v for v, _ in with_length if v is not None], [n for v, n in with_length if v is not None])
    rho, accuracy, pairs, calibration = None, None, 0, None
    if reference is not None:
        calibration = calibrate(scores, reference)
        both = _paired(scores, reference)
        rho = spearman([v for v, _ in both], [t for _, t in both])
        accuracy, pairs = pairwise_accuracy(scores, reference)
    shape = score_shape(scores)
    return ScorerReport(
        task=task,
        scorer=scorer,
        scored=len(values),
        unscored=len(flat) - len(values),
        mean=sum(values) / len(values) if values else None,
        rank_correlation=rho,
        pairwise_accuracy=accuracy,
        pairs=pairs,
        length_correlation=length_rho,
        position_means=tuple(position_means),
        prompts=shape.prompts,
        flat_prompts=shape.flat,
        calibration=calibration,
    )


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks

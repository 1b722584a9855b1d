"""Turning scored candidates into training targets: best-of-N and (best, worst) pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ScoredCandidate", "select_distill_targets", "select_preference_pair"]


@dataclass(frozen=True)
class ScoredCandidate:
    """One candidate answer with its composite score (None: no scorer could rate it)."""

    text: str
    score: float | None
    num_tokens: int
    finished: bool = True


def _ranked(candidates: Sequence[ScoredCandidate]) -> list[ScoredCandidate]:
    # Unfinished (cut-off) answers are never imitated; among equal scores the shorter
    # answer wins, which teaches the same result at a lower inference cost.
    usable = [c for c in candidates if c.score is not None and c.finished and c.text.strip()]
    return sorted(usable, key=lambda c: (-(c.score or 0.0), c.num_tokens, c.text))


def select_distill_targets(
    candidates: Sequence[ScoredCandidate], *, threshold: float, per_prompt: int = 1
) -> list[ScoredCandidate]:
    """The best distinct candidates scoring at least `threshold`, at most `per_prompt`."""
    chosen: list[ScoredCandidate] = []
    seen: set[str] = set()
    for candidate in _ranked(candidates):
        if (candidate.score or 0.0) < threshold or len(chosen) >= per_prompt:
            break
        key = " ".join(candidate.text.split())
        if key not in seen:
            seen.add(key)
            chosen.append(candidate)
    return chosen


def select_preference_pair(
    candidates: Sequence[ScoredCandidate], *, margin: float, threshold: float = 0.0
) -> tuple[ScoredCandidate, ScoredCandidate] | None:
    """(best, worst) when the best reaches `threshold` and beats the worst by `margin`."""
    ranked = [c for c in candidates if c.score is not None and c.text.strip()]
    best_pool = _ranked(ranked)
    if not best_pool:
        return None
    best = best_pool[0]
    # The worst answer may be a cut-off one: teaching the model to avoid rambling is useful.
    worst = min(ranked, key=lambda c: (c.score or 0.0, -c.num_tokens))
    best_score, worst_score = best.score or 0.0, worst.score or 0.0
    if best_score < threshold or best_score - worst_score < margin:
        return None
    return best, worst

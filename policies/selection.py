"""Turning scored candidates into training targets: best-of-N and (best, worst) pairs.

Two ways to say which candidates are worth imitating: an absolute `threshold` (right for verifiers that
score 0 or 1), or *relative* to the prompt's own group of candidates (right for a judge or a reward model,
whose continuous scores rarely reach a fixed bar, and which say more about order than about level).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "SATURATED_SHARE",
    "ScoreShape",
    "ScoredCandidate",
    "group_mean",
    "score_shape",
    "select_distill_targets",
    "select_preference_pair",
    "select_relative_targets",
]


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


def group_mean(candidates: Sequence[ScoredCandidate]) -> float | None:
    """The mean score of a prompt's scored candidates (None when none was scored)."""
    values = [c.score for c in candidates if c.score is not None]
    return sum(values) / len(values) if values else None


def select_relative_targets(
    candidates: Sequence[ScoredCandidate], *, margin: float, floor: float = 0.0, per_prompt: int = 1
) -> list[ScoredCandidate]:
    """The best distinct candidates that beat their group's mean by at least `margin` (and score at least
    `floor`), at most `per_prompt`. A group whose candidates all score alike teaches nothing and gives none."""
    mean = group_mean(candidates)
    if mean is None:
        return []
    chosen: list[ScoredCandidate] = []
    seen: set[str] = set()
    for candidate in _ranked(candidates):
        score = candidate.score or 0.0
        if score <= mean or score - mean < margin or score < floor or len(chosen) >= per_prompt:
            break
        key = " ".join(candidate.text.split())
        if key not in seen:
            seen.add(key)
            chosen.append(candidate)
    return chosen


#: Share of a task's prompts whose candidates all scored alike from which its scorer is called saturated.
SATURATED_SHARE = 0.9


@dataclass(frozen=True)
class ScoreShape:
    """What a task's scores look like across a round's candidates."""

    kind: str  # binary (0/1 only), graded (a few levels), continuous, or none (nothing scored)
    levels: tuple[float, ...]  # the distinct scores, when there are at most 6
    flat: int  # prompts whose scored candidates all scored alike (a group that teaches nothing relative to itself)
    prompts: int

    @property
    def saturated(self) -> bool:
        """Nearly every prompt's candidates scored alike: the scorer tells them apart too rarely to learn from."""
        return self.prompts >= 4 and self.flat >= SATURATED_SHARE * self.prompts


def score_shape(groups: Sequence[Sequence[float | None]]) -> ScoreShape:
    """The shape of the scores of each prompt's candidates (None: not scored)."""
    values = {round(v, 6) for g in groups for v in g if v is not None}
    flat = 0
    for group in groups:
        scored = [v for v in group if v is not None]
        flat += len(scored) < 2 or max(scored) - min(scored) < 1e-9
    if not values:
        kind = "none"
    elif values <= {0.0, 1.0}:
        kind = "binary"
    elif len(values) <= 6:
        kind = "graded"
    else:
        kind = "continuous"
    return ScoreShape(kind, tuple(sorted(values)) if len(values) <= 6 else (), flat, len(groups))

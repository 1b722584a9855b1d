"""The composite scorer: a weighted mean of verifiers that never lets one break a round."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.protocols import Scorer
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.scoring.judge import JudgeScorer
from taoflow.connectors.scoring.models import RewardModelScorer, SelfCertaintyScorer
from taoflow.connectors.scoring.tool_use import ToolCallScorer
from taoflow.connectors.scoring.verifiers import (
    ArithmeticScorer,
    JsonSchemaScorer,
    LengthScorer,
    PythonScorer,
    RegexScorer,
    SelfConsistencyScorer,
    SqlScorer,
)

__all__ = ["IN_PROCESS", "CompositeScorer", "ScoringStats", "build_scorer"]

log = logging.getLogger(__name__)

_KINDS: dict[str, Any] = {
    "arithmetic": ArithmeticScorer,
    "json_schema": JsonSchemaScorer,
    "regex": RegexScorer,
    "length": LengthScorer,
    "sql": SqlScorer,
    "python": PythonScorer,
    "self_consistency": SelfConsistencyScorer,
    "judge": JudgeScorer,
    "reward_model": RewardModelScorer,
    "self_certainty": SelfCertaintyScorer,
    "tool_call": ToolCallScorer,
}

#: Scorers that call a model (over the network, or loaded here): they run in the round's own process, not in
#: the sandbox, which refuses sockets and caps memory.
IN_PROCESS = frozenset({"judge", "reward_model", "self_certainty"})


def build_scorer(kind: str, params: dict[str, Any]) -> Scorer:
    """Construct a verifier from its settings; bad parameters fail here, at start-up."""
    if kind not in _KINDS:
        raise ConfigurationError(f"unknown scorer type {kind!r}; choose from {sorted(_KINDS)}")
    if kind == "judge" and "api_key" in params:
        raise ConfigurationError("a judge's API key never goes in the config: set api_key_env or api_key_file")
    try:
        scorer: Scorer = _KINDS[kind](**params)
    except TypeError as exc:
        raise ConfigurationError(f"scorer {kind!r}: bad params {sorted(params)}: {exc}") from None
    return scorer


@dataclass
class ScoringStats:
    """What went wrong while scoring, by scorer name (counted, logged once per scorer)."""

    errors: Counter[str] = field(default_factory=Counter)
    garbage: Counter[str] = field(default_factory=Counter)
    unscored: int = 0
    scored: int = 0


class CompositeScorer:
    """Weighted mean over the scorers that judged a candidate.

    A scorer that raises on a prompt, or returns something other than a number in [0, 1]
    (or None: "cannot judge") for a candidate, leaves that candidate unscored: a strict
    verifier's crash must not let its candidates through on the other scorers alone.
    """

    def __init__(self, parts: Sequence[tuple[Scorer, float]]) -> None:
        if not parts:
            raise ConfigurationError("a composite scorer needs at least one scorer")
        self.parts = list(parts)
        self.stats = ScoringStats()
        self._logged: set[str] = set()

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        sums = [0.0] * len(responses)
        weights = [0.0] * len(responses)
        failed = [False] * len(responses)
        for scorer, weight in self.parts:
            for i, value in enumerate(self._run(scorer, record, responses)):
                if value is _FAILED:
                    failed[i] = True
                elif isinstance(value, float | int):
                    sums[i] += weight * float(value)
                    weights[i] += weight
        results: list[float | None] = []
        for total, weight, bad in zip(sums, weights, failed, strict=True):
            if bad or weight == 0.0:
                self.stats.unscored += 1
                results.append(None)
            else:
                self.stats.scored += 1
                results.append(total / weight)
        return results

    def prepare(self, task: str, records: Sequence[PromptRecord], responses: Sequence[Sequence[str]]) -> None:
        """Let the parts that score relative to a task's statistics see all its candidates first."""
        for scorer, _ in self.parts:
            prepare = getattr(scorer, "prepare", None)
            if callable(prepare):
                try:
                    prepare(task, records, responses)
                except Exception as exc:  # its scores then fail one by one, counted as usual
                    self.stats.errors[scorer.name] += 1
                    self._log_once(scorer.name, f"scorer {scorer.name} could not prepare: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Close the parts that hold a process, a connection or a file."""
        for scorer, _ in self.parts:
            close = getattr(scorer, "close", None)
            if callable(close):
                close()

    def _run(self, scorer: Scorer, record: PromptRecord, responses: Sequence[str]) -> list[object]:
        try:
            values = list(scorer.score(record, responses))
            if len(values) != len(responses):
                raise ValueError(f"returned {len(values)} scores for {len(responses)} answers")
        except Exception as exc:  # a verifier is user code: any exception is its failure, not ours
            self.stats.errors[scorer.name] += len(responses)
            self._log_once(scorer.name, f"scorer {scorer.name} raised {type(exc).__name__}: {exc}")
            return [_FAILED] * len(responses)
        return [self._check(scorer.name, v) for v in values]

    def _check(self, name: str, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.stats.garbage[name] += 1
            self._log_once(name, f"scorer {name} returned {value!r}; expected a number in [0, 1] or None")
            return _FAILED
        if not 0.0 <= value <= 1.0:
            self.stats.garbage[name] += 1
            self._log_once(name, f"scorer {name} returned {value!r}, outside [0, 1]")
            return _FAILED
        return value

    def _log_once(self, name: str, message: str) -> None:
        if name not in self._logged:
            self._logged.add(name)
            log.warning("%s (further failures of this scorer are counted, not logged)", message)


_FAILED = object()

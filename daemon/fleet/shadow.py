"""A deploy's shadow step: the candidate loaded, nothing routed to it, gateways mirroring live requests for the
stable name to it; the pairs they send back judged with the gate's scorers and statistics and the scorer-gaming
monitors, once `min_pairs` are in or `max_minutes` pass (extended once when too few came).

Each pair is scored in both orders (champion first, then candidate first) and each answer's score is the mean of
its two: a judge that favours a position cancels out, and the difference between orders is its position bias (a
monitor). Verifiers score an answer alone, so for them both orders agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from taoflow.connectors.errors import RecordError
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.sources.formats import parse_record
from taoflow.daemon.round.evaluation import slices
from taoflow.daemon.round.parts import TaskScorers, monitor_thresholds
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.deploys import DeployRecord, DeployStore
from taoflow.daemon.store.round_files import Evaluation
from taoflow.daemon.store.shadows import Mirror, Pair, ShadowStore
from taoflow.policies.gate import GateDecision, GatePolicy, decide_gate
from taoflow.policies.monitors import MonitorReport, MonitorThresholds, check_gaming

__all__ = ["ShadowStep", "ShadowVerdict", "judge_pairs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowVerdict:
    decision: GateDecision
    monitors: MonitorReport
    pairs: int
    unreadable: int  # pairs whose rows did not parse, or whose answer is not text

    @property
    def passed(self) -> bool:
        return self.decision.passed and self.monitors.passed

    @property
    def reason(self) -> str:
        if not self.monitors.passed:
            return f"monitors: {self.monitors.reason}"
        return self.decision.reason

    def figures(self) -> dict[str, object]:
        d = self.decision
        return {
            "passed": self.passed,
            "outcome": d.outcome if self.monitors.passed else "monitor",
            "reason": self.reason,
            "pairs": self.pairs,
            "unreadable": self.unreadable,
            "scored": d.n,
            "candidate_mean": d.candidate_mean,
            "champion_mean": d.champion_mean,
            "noise": asdict(d.noise) if d.noise else None,
            "monitors": asdict(self.monitors),
        }


def _both_orders(
    scorers: TaskScorers, record: PromptRecord, champion: str, candidate: str
) -> tuple[float | None, float | None, float | None]:
    """(champion's score, candidate's score, first-minus-second bias), each averaged over the two orders."""
    scorer = scorers.for_task(record.task)
    first = scorer.score(record, [champion, candidate])
    second = scorer.score(record, [candidate, champion])

    def mean(*values: float | None) -> float | None:
        known = [float(v) for v in values if v is not None]
        return sum(known) / len(known) if known else None

    bias = None
    if None not in (*first, *second):
        bias = ((first[0] - first[1]) + (second[0] - second[1])) / 2  # type: ignore[operator]
    return mean(first[0], second[1]), mean(first[1], second[0]), bias


def judge_pairs(
    pairs: Sequence[Pair],
    scorers: TaskScorers,
    policy: GatePolicy,
    thresholds: MonitorThresholds,
    *,
    training: TaskScorers | None = None,
) -> ShadowVerdict:
    """The gate's decision and the monitors over the pairs. `training`: the training scorers, when `scorers` are the
    gate's own (their improvements are compared: the scorer-divergence monitor)."""
    sides: dict[str, Evaluation] = {}
    by_training: dict[str, Evaluation] = {}
    for name in ("candidate", "champion"):
        sides[name] = Evaluation(scores={}, answers=[], unscored=0)
        by_training[name] = Evaluation(scores={}, answers=[], unscored=0)
    biases: list[float] = []
    unreadable = 0
    for pair in pairs:
        try:
            record = parse_record(pair.champion)
            candidate = parse_record(pair.candidate).response
        except RecordError:
            unreadable += 1
            continue
        if record.response is None or candidate is None:
            unreadable += 1
            continue
        champion_score, candidate_score, bias = _both_orders(scorers, record, record.response, candidate)
        if bias is not None:
            biases.append(bias)
        for name, score, answer in (
            ("candidate", candidate_score, candidate),
            ("champion", champion_score, record.response),
        ):
            sides[name].scores.setdefault(record.task, []).append(score)
            sides[name].answers.append(answer)
        if training is not None:
            again = _both_orders(training, record, record.response, candidate)
            by_training["champion"].scores.setdefault(record.task, []).append(again[0])
            by_training["candidate"].scores.setdefault(record.task, []).append(again[1])
    decision = decide_gate(slices(sides["candidate"], sides["champion"]), policy)
    training_improvement = None
    if training is not None:
        trained = decide_gate(slices(by_training["candidate"], by_training["champion"]), policy)
        training_improvement = trained.mean_improvement
    monitors = check_gaming(
        sides["candidate"].answers,
        sides["champion"].answers,
        thresholds,
        training_improvement=training_improvement,
        independent_improvement=decision.mean_improvement if training is not None else None,
        position_bias=sum(biases) / len(biases) if biases else None,
    )
    return ShadowVerdict(decision, monitors, len(pairs), unreadable)


class ShadowStep:
    """Start the mirror, wait for pairs (the deploy stays at this step between the fleet loop's passes), decide."""

    def __init__(
        self,
        settings: Settings,
        deploys: DeployStore,
        shadows: ShadowStore,
        scorers: TaskScorers,
        training: TaskScorers | None,
    ) -> None:
        self.settings = settings
        self.s = settings.fleet.shadow
        self.deploys = deploys
        self.shadows = shadows
        self.scorers = scorers
        self.training = training
        self.model = settings.model.served_name

    def run(self, record: DeployRecord, *, now: float | None = None) -> tuple[DeployRecord, ShadowVerdict | None]:
        """The deploy with its shadow recorded; a verdict once it is decided (None: still gathering pairs)."""
        now = time.time() if now is None else now
        shadow: dict[str, Any] | None = record.detail.get("shadow")
        if shadow is None:
            shadow = self._start(record, now)
            record = self.deploys.update(record.id, detail={**record.detail, "shadow": shadow})
        pairs = self.shadows.count(record.id)
        if pairs < self.s.min_pairs and now < float(shadow["deadline"]):
            if shadow.get("pairs") != pairs:
                record = self.deploys.update(record.id, detail={**record.detail, "shadow": {**shadow, "pairs": pairs}})
            return record, None
        if pairs < self.s.min_pairs and self.s.extend and not shadow.get("extended"):
            shadow = {**shadow, "extended": True, "deadline": now + 60 * self.s.max_minutes, "pairs": pairs}
            log.warning(
                "deploy %d: %d of %d shadow pairs by the deadline; extended once", record.id, pairs, self.s.min_pairs
            )
            return self.deploys.update(record.id, detail={**record.detail, "shadow": shadow}), None
        verdict = judge_pairs(
            self.shadows.pairs(record.id),
            self.scorers,
            self._policy(),
            monitor_thresholds(self.settings),
            training=self.training,
        )
        self.shadows.stop(self.model, deploy=record.id)
        shadow = {**shadow, "pairs": pairs, "decided_at": now, "verdict": verdict.figures()}
        log.info("deploy %d: shadow of %s over %d pairs: %s", record.id, record.version, pairs, verdict.reason)
        return self.deploys.update(record.id, detail={**record.detail, "shadow": shadow}), verdict

    def stop(self, record: DeployRecord) -> None:
        """The deploy ends or reverts: gateways stop mirroring (if they still are)."""
        self.shadows.stop(self.model, deploy=record.id)

    def _start(self, record: DeployRecord, now: float) -> dict[str, Any]:
        s = self.s
        mirror = Mirror(
            version=record.version,
            deploy=record.id,
            rate=s.rate,
            max_concurrent=s.max_concurrent,
            max_share=s.max_share,
            max_tokens=s.max_tokens,
            timeout_seconds=s.timeout_seconds,
        )
        generation = self.shadows.start(self.model, mirror)
        log.info(
            "deploy %d: %s shadows %s (%.0f%% of requests mirrored, routes %d); deciding after %d pairs or %g min",
            record.id,
            record.version,
            self.model,
            100 * s.rate,
            generation,
            s.min_pairs,
            s.max_minutes,
        )
        return {
            "started_at": now,
            "deadline": now + 60 * s.max_minutes,
            "extended": False,
            "pairs": 0,
            "generation": generation,
        }

    def _policy(self) -> GatePolicy:
        g = self.settings.gate
        return GatePolicy(
            min_mean_improvement=self.s.min_improvement,
            max_slice_regression=g.max_slice_regression,
            min_samples=self.s.min_pairs,
            min_slice_samples=g.min_slice_samples,
            confidence=g.confidence,
            bootstrap_samples=g.bootstrap_samples,
        )

"""The post-deploy watch: serving counters and live-response scores since a deploy, judged by
`policies.rollout.decide_watch`; a crossed threshold rolls back to `previous`.

The starting point (counters at the end of the deploy, the mean score of live responses
logged before it) is stored in the deploy record, so a restarted daemon watches on from
the same baseline.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace

from taoflow.daemon.fleet.replicas import Fleet, serving_counters
from taoflow.daemon.round.parts import TaskScorers
from taoflow.daemon.settings import WatchSettings
from taoflow.daemon.store.deploys import DeployRecord, DeployStore
from taoflow.daemon.store.state import State
from taoflow.policies.rollout import WatchDecision, WatchSnapshot, WatchThresholds, decide_watch

__all__ = ["Watch"]

log = logging.getLogger(__name__)


class Watch:
    def __init__(self, settings: WatchSettings, state: State, fleet: Fleet, scorers: TaskScorers) -> None:
        self.settings = settings
        self.state = state
        self.fleet = fleet
        self.scorers = scorers
        self.deploys = DeployStore(state.db)
        self.thresholds = WatchThresholds(
            max_error_rate=settings.max_error_rate,
            max_p99_latency_s=settings.max_p99_latency_seconds,
            max_score_drop=settings.max_score_drop,
            min_requests=settings.min_requests,
            min_scores=settings.min_scores,
        )

    def check(self, record: DeployRecord, *, now: float | None = None) -> tuple[DeployRecord, WatchDecision]:
        """Judge a watching deploy; mark it done when its window has passed without a problem."""
        now = time.time() if now is None else now
        if "watch_start" not in record.detail:
            start = {
                "counters": asdict(serving_counters(self.fleet)),
                "since": now,
                "baseline_score": self._mean_score(before=record.updated_at),
            }
            record = self.deploys.update(record.id, detail={**record.detail, "watch_start": start})
        start = record.detail["watch_start"]
        counters = start["counters"]
        begin = WatchSnapshot(
            counters["requests"], counters["errors"], tuple((b, c) for b, c in counters["latency_buckets"])
        )
        current = replace(serving_counters(self.fleet), scores=tuple(self._scores(since=start["since"])))
        decision = decide_watch(begin, current, baseline_score=start["baseline_score"], thresholds=self.thresholds)
        detail = {**record.detail, "watch": asdict(decision)}
        if decision.rollback:
            log.error("deploy %d of %s: %s; rolling back", record.id, record.version, decision.reason)
            record = self.deploys.update(
                record.id, status="done", detail=detail, reason=f"rolled back by the watch: {decision.reason}"
            )
        elif now - start["since"] >= self.settings.window_seconds:
            record = self.deploys.update(record.id, status="done", step="done", detail=detail)
        else:
            record = self.deploys.update(record.id, detail=detail)
        return record, decision

    def _mean_score(self, *, before: float) -> float | None:
        scores = self._scores(before=before)
        return sum(scores) / len(scores) if len(scores) >= self.thresholds.min_scores else None

    def _scores(self, *, since: float | None = None, before: float | None = None) -> list[float]:
        scores = []
        for record in self.state.buffer.responses(since=since, before=before, limit=200):
            (value,) = self.scorers.for_task(record.task).score(record, [record.response or ""])
            if value is not None:
                scores.append(float(value))
        return scores

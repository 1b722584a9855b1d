"""What the admin API asks the daemon, answered from the state and the daemon's parts (an `AdminBackend`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from taoflow.connectors.errors import Busy, ErasureIncomplete, InvalidRequest, NothingToTrain
from taoflow.daemon.fleet.loop import FleetLoop
from taoflow.daemon.service.admin import Change
from taoflow.daemon.service.flywheel import Flywheel
from taoflow.daemon.service.supervisor import Supervisor
from taoflow.daemon.store.deploys import DeployStore
from taoflow.daemon.store.erasure import erasure_summary, forget, recently_erased, report_counts
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.routes import RouteStore
from taoflow.daemon.store.shadows import ShadowStore
from taoflow.daemon.store.state import State
from taoflow.policies.retrain import RetrainDecision

__all__ = ["Answers"]

log = logging.getLogger(__name__)


class Answers:
    """The daemon's side of the admin API: refusals are raised as the errors `AdminBackend` names."""

    def __init__(
        self,
        state: State,
        *,
        model: str,
        flywheel: Flywheel,
        supervisor: Supervisor,
        fleet_loop: FleetLoop | None,
        ready: threading.Event,
    ) -> None:
        self.state = state
        self.model = model
        self._flywheel = flywheel
        self._supervisor = supervisor
        self._fleet_loop = fleet_loop
        self._ready = ready

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        tasks = self._supervisor.running()
        return self._ready.is_set() and all(tasks.values()) and self.database_ok(), tasks

    def dry_run(self) -> RetrainDecision:
        return self._flywheel.dry_run()

    def pause(self, reason: str) -> None:
        self._flywheel.controls.set_paused(True, reason=reason)

    def resume(self) -> None:
        self._flywheel.controls.set_paused(False, reason="resumed")
        self._flywheel.controls.reset_rejections()

    def trigger(self, *, tasks: Sequence[str], max_prompts: int | None, reason: str) -> None:
        """Refused up front when nothing could be trained: an unknown task, or no new prompts."""
        counts = {task: c.new for task, c in self.state.buffer.stats().tasks.items()}
        held = ", ".join(f"{task} ({n} new)" for task, n in counts.items()) or "no task yet"
        unknown = [task for task in tasks if task not in counts]
        if unknown:
            raise InvalidRequest(f"unknown task {', '.join(map(repr, unknown))}; the buffer holds {held}")
        if not any(counts[task] for task in tasks or counts):
            raise NothingToTrain(f"no new training prompts in {', '.join(tasks) or 'any task'} ({held})")
        if not self._flywheel.trigger(tasks=tasks, max_prompts=max_prompts, reason=reason):
            raise Busy("a round is already running")

    def promote(self, version: str, *, reason: str) -> Change:
        registry = self.state.registry
        registry.get(version)  # an unknown version is refused before anything is recorded
        if self._fleet_loop is not None:  # through the fleet: canary, smoke, waves, then the registry
            record = self._fleet_loop.request_promote(version, reason=reason)
            return Change(True, f"deploy {record.id} rolls {version} out to the fleet")
        registry.promote(version, reason=reason)
        return Change(False, f"{version} is the champion")

    def rollback(self, to: str | None, *, reason: str) -> Change:
        registry = self.state.registry
        if to is not None:
            registry.get(to)
        if self._fleet_loop is not None:
            record = self._fleet_loop.request_rollback(to=to, reason=reason)
            return Change(True, f"deploy {record.id} rolls {record.version} back out to the fleet")
        version = registry.rollback(self.model, to=to, reason=reason)
        return Change(False, f"{version.version} is the champion again")

    def adapters(self) -> list[dict[str, Any]]:
        registry = self.state.registry
        champion = registry.alias(self.model, "champion")
        return [
            {
                "version": v.version,
                "state": v.state,
                "parent": v.parent,
                "champion": v.version == champion,
                "created_at": v.created_at,
                "reason": v.reason,
            }
            for v in registry.versions(model=self.model)
        ]

    def forget(
        self,
        *,
        request_ids: Sequence[str],
        texts: Sequence[str],
        reason: str,
        limit: int,
        max_share: float,
        dry_run: bool,
    ) -> dict[str, int]:
        report = forget(
            self.state.db,
            rounds_dir=self.state.rounds_dir,
            request_ids=request_ids,
            texts=texts,
            reason=reason,
            limit=limit,
            max_share=max_share,
            dry_run=dry_run,
        )
        counts = report_counts(report)
        if report.unscrubbed:
            raise ErasureIncomplete(
                f"the database holds no copy of the erased prompts, but {len(report.unscrubbed)} round directories"
                " cannot be found and files there may still hold them (see the daemon log)"
            )
        log.info("erasure request through the admin API (%s): %s%s", reason, counts, " (dry run)" if dry_run else "")
        return counts

    def erasures(self, *, limit: int) -> dict[str, Any]:
        return erasure_summary(self.state.db, limit=limit)

    def database_ok(self) -> bool:
        try:
            self.state.db.ping()
        except Exception:  # readiness says no; the error itself shows up in every other path
            return False
        return True

    def status(self) -> dict[str, Any]:
        stats = self.state.buffer.stats()
        registry = self.state.registry
        flywheel = self._flywheel
        rounds = RoundStore(self.state.db, self.state.rounds_dir).recent(self.model, limit=5)
        lease = flywheel.lease.holder()
        decision = flywheel.dry_run()  # as of now: a resume or a new prompt shows at once
        paused, reason = flywheel.paused(), flywheel.controls.pause_reason()
        return {
            "model": self.model,
            "time": time.time(),
            "paused": paused,
            "paused_by": None if not paused else "config" if reason is None else "operator",
            "pause_reason": reason,
            "buffer": {
                "tasks": {t: {"train": c.train, "heldout": c.heldout, "new": c.new} for t, c in stats.tasks.items()},
                "total": stats.total,
                "new": stats.new,
                "dead_letters": stats.dead_letters,
            },
            "champion": registry.alias(self.model, "champion"),
            "previous": registry.alias(self.model, "previous"),
            "round_running": flywheel.launcher.running or lease is not None,
            "round_lock": None if lease is None else {"owner": lease.owner, "since": lease.acquired_at},
            "rounds": [
                {k: getattr(r, k) for k in ("id", "step", "status", "reason", "version", "started_at", "updated_at")}
                for r in rounds
            ],
            "next_trigger": {
                "trigger": decision.trigger,
                "rule": decision.rule,
                "reason": decision.reason,
                "next_check_at": decision.next_check_at,
                "alert": decision.alert,
            },
            "tasks": self._supervisor.running(),
        }

    def fleet_status(self) -> dict[str, Any]:
        keys = ("id", "kind", "trigger", "version", "from_version", "status", "step", "reason")
        deploys = [
            {**{k: getattr(d, k) for k in keys}, **({"shadow": d.detail["shadow"]} if "shadow" in d.detail else {})}
            for d in DeployStore(self.state.db).latest(self.model, limit=5)
        ]
        if self._fleet_loop is None:
            return {"configured": False, "replicas": {}, "drift": {}, "deploys": deploys}
        report = self._fleet_loop.reconciler.observe()
        return {
            "configured": True,
            "champion": report.champion,
            "replicas": report.replicas,
            "drift": report.drift,
            "unreachable_alert": self._fleet_loop.last_report.alerting if self._fleet_loop.last_report else [],
            "deploys": deploys,
        }

    def routes(self) -> dict[str, Any]:
        return RouteStore(self.state.db).table().as_dict()

    def gateway_report(self, gateway: str, *, generation: int, inflight: dict[str, int]) -> dict[str, Any]:
        routes = RouteStore(self.state.db)
        routes.report(gateway, generation, inflight)
        # The requests erased lately: a gateway drops any it still holds in its capture spool.
        return {**routes.table().as_dict(), "erased": recently_erased(self.state.db)}

    def shadow_pairs(self, gateway: str, pairs: list[dict[str, Any]]) -> dict[str, int]:
        return ShadowStore(self.state.db).add(gateway, pairs, max_pairs=self.state.settings.fleet.shadow.max_pairs)

    def log_error(self, path: str, exc: Exception) -> None:
        log.error("admin API error at %s: %s: %s", path, type(exc).__name__, exc)

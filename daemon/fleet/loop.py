"""The daemon's `fleet` task: one loop that owns every change to the serving fleet.

Each pass, under the `fleet` lease (so a `taoflow rollback` run by hand and the daemon
never change replicas at the same time): carry on a deploy left open by a restart or
requested through the admin API, roll out a newly gated adapter, judge the post-deploy
watch (and roll back), then reconcile the replicas with the registry.
"""

from __future__ import annotations

import logging
import threading
import time

from taoflow.connectors.errors import TaoflowError
from taoflow.daemon.fleet.deploy import Deployer
from taoflow.daemon.fleet.metrics import FleetMetrics
from taoflow.daemon.fleet.reconcile import Reconciler, ReconcileReport
from taoflow.daemon.fleet.replicas import Fleet
from taoflow.daemon.fleet.watch import Watch
from taoflow.daemon.round.parts import build_scorers
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.deploys import DeployRecord
from taoflow.daemon.store.lease import Lease
from taoflow.daemon.store.state import State

__all__ = ["FleetLoop", "fleet_lease"]

log = logging.getLogger(__name__)


def fleet_lease(settings: Settings, state: State) -> Lease:
    return Lease(state.db, "fleet", stale_after_s=settings.daemon.lock_stale_seconds)


class FleetLoop:
    def __init__(self, settings: Settings, state: State, *, metrics: FleetMetrics | None = None) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.model = settings.model.served_name
        self.fleet = Fleet(settings.fleet, state.store)
        scorers = build_scorers(settings)
        self.deployer = Deployer(settings, state, self.fleet, scorers=scorers, on_finished=self._finished)
        self.reconciler = Reconciler(state, self.fleet, self.model, metrics=metrics)
        self.watch = Watch(settings.fleet.watch, state, self.fleet, scorers)
        self.last_report: ReconcileReport | None = None
        self._wake = threading.Event()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.tick()
            deadline = time.monotonic() + self.settings.fleet.reconcile_interval_seconds
            while not (stop.is_set() or self._wake.is_set()) and time.monotonic() < deadline:
                self._wake.wait(0.25)  # woken by a request, or stopped, within a quarter second
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def request_rollback(self, *, to: str | None, reason: str) -> DeployRecord:
        """Record a rollback deploy for the loop to carry out (the admin API's entry); returns at once."""
        record = self.deployer.start_rollback(to=to, trigger="api", reason=reason)
        self.wake()
        return record

    def request_promote(self, version: str, *, reason: str) -> DeployRecord:
        record = self.deployer.start_promote(version, trigger="api", reason=reason)
        self.wake()
        return record

    def tick(self) -> None:
        lease = fleet_lease(self.settings, self.state)
        if lease.acquire() is not None:
            return  # a deploy run by hand holds the fleet; look again next interval
        lease.keep_renewed()
        try:
            self._deploys()
            self.last_report = self.reconciler.once()
        except TaoflowError as exc:  # a deploy already recorded its failure; log it once and go on
            log.error("fleet: %s", exc)
        finally:
            lease.release()

    def _deploys(self) -> None:
        record = self.deployer.deploys.open(self.model)
        if record is not None:
            log.info(
                "fleet: carrying on deploy %d (%s %s, %s at %s)",
                record.id,
                record.kind,
                record.version,
                record.status,
                record.step,
            )
            self._shadow_figures(record, self.deployer.run(record))
        elif self.settings.fleet.auto_deploy:
            version = self._newly_gated()
            if version is not None:
                started = self.deployer.start_promote(version, trigger="gate", reason="passed the gate")
                self._shadow_figures(started, self.deployer.run(started))
        watching = self.deployer.deploys.watching(self.model)
        if watching is not None:
            watched, decision = self.watch.check(watching)
            if self.metrics is not None:
                readings = {
                    "error_rate": decision.error_rate,
                    "p99_latency_seconds": decision.p99_latency_s,
                    "live_score": decision.live_score,
                }
                for signal, value in readings.items():
                    if value is not None:
                        self.metrics.watch.labels(signal).set(value)
            if decision.rollback and watched.from_version is not None:
                self.deployer.rollback(to=watched.from_version, trigger="watch", reason=decision.reason)

    def _shadow_figures(self, before: DeployRecord, after: DeployRecord) -> None:
        """Export a shadow's pairs, and count its decision once (when this pass made it)."""
        if self.metrics is None:
            return
        shadow = after.detail.get("shadow")
        running = shadow is not None and "verdict" not in shadow
        self.metrics.shadow_pairs.set(int(shadow.get("pairs", 0)) if running and shadow else 0)
        if shadow is None or "verdict" not in shadow or "verdict" in before.detail.get("shadow", {}):
            return
        verdict = shadow["verdict"]
        outcome = (
            "promoted"
            if verdict["passed"]
            else {"monitor": "monitor", "too_few_samples": "too_few"}.get(verdict["outcome"], "rejected")
        )
        self.metrics.shadow_decisions.labels(outcome).inc()

    def _newly_gated(self) -> str | None:
        registry = self.state.registry
        champion = registry.alias(self.model, "champion")
        since = registry.get(champion).created_at if champion else 0.0  # never an adapter older than the live one
        gated = [v for v in registry.versions(model=self.model) if v.state == "gated" and v.created_at > since]
        fresh = [v.version for v in gated if self._deployable(v.version)]
        return fresh[-1] if fresh else None

    def _deployable(self, version: str) -> bool:
        """Never deployed; or every deploy of it was reverted by the fleet's fault (a replica down, not the
        adapter), attempts are left, and every replica answered the last reconcile."""
        tries = self.deployer.deploys.promotes(version)
        if not tries:
            return True
        if len(tries) >= self.settings.fleet.deploy_attempts:
            return False
        if any(t.status != "reverted" or t.detail.get("fault") != "fleet" for t in tries):
            return False
        report = self.last_report
        return report is not None and bool(report.replicas) and all(v is not None for v in report.replicas.values())

    def _finished(self, record: DeployRecord) -> None:
        if self.metrics is not None:
            self.metrics.deploy_seconds.labels(record.kind, record.status).observe(
                record.updated_at - record.started_at
            )

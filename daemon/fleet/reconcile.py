"""The reconciler: make every replica serve the registry's champion under the stable name
(`fleet.routing: direct`) or under its own version name, with the route table naming it
(`fleet.routing: gateway`: every version the stable name is routed to is loaded everywhere).

A restarted vLLM server has no adapters (they live in its memory), a scaled-out one has
never had any: each pass loads the champion where it is missing or stale, reports
adapters nobody registered, and marks replicas that keep failing to answer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from taoflow.connectors.errors import DeployError, ReplicaUnavailable
from taoflow.connectors.protocols import replace_adapter
from taoflow.daemon.fleet.metrics import FleetMetrics
from taoflow.daemon.fleet.replicas import Fleet
from taoflow.daemon.store.routes import RouteStore, Target
from taoflow.daemon.store.shadows import ShadowStore
from taoflow.daemon.store.state import State
from taoflow.policies.rollout import Repair, plan_repairs

__all__ = ["ReconcileReport", "Reconciler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileReport:
    champion: str | None
    replicas: dict[str, dict[str, str] | None]
    drift: dict[str, list[str]]
    repaired: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    alerting: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(self, state: State, fleet: Fleet, model: str, *, metrics: FleetMetrics | None = None) -> None:
        self.state = state
        self.fleet = fleet
        self.model = model
        self.metrics = metrics
        self._misses: dict[str, int] = {}

    def _compare(
        self, *, repair: bool = True
    ) -> tuple[str | None, dict[str, dict[str, str] | None], list[Repair], dict[str, list[str]]]:
        champion = self.state.registry.alias(self.model, "champion")
        if self.fleet.settings.routing == "gateway":
            desired = {name: self.fleet.server_path(name) for name in self._routed(champion, repair=repair)}
        else:
            desired = {self.model: self.fleet.server_path(champion)} if champion else {}
        known = frozenset(v.version for v in self.state.registry.versions(model=self.model))
        observed = {url: (None if view is None else dict(view.adapters)) for url, view in self.fleet.observe().items()}
        repairs, drift = plan_repairs(observed, desired, known_names=known)
        if self.fleet.settings.routing == "gateway":
            # Versions of this model loaded but routed to by nobody (an unload a deploy could not make): they
            # hold a LoRA slot each. Only between deploys: the reconciler runs under the fleet lease.
            # A version in shadow is loaded and routed to by nobody on purpose: gateways mirror requests to it.
            shadowed = {m.version for m in ShadowStore(self.state.db).active().values()}
            drift["unrouted"] = sorted(
                f"{url} {name}"
                for url, adapters in observed.items()
                for name in adapters or {}
                if name in known and name not in desired and name not in shadowed
            )
        return champion, observed, repairs, drift

    def _routed(self, champion: str | None, *, repair: bool) -> list[str]:
        """The versions the stable name is routed to; a champion with no route yet (a fleet that served it
        directly before) is given one."""
        routes = RouteStore(self.state.db)
        targets = routes.targets(self.model)
        if not targets and champion:
            if not repair:
                return [champion]
            routes.set(self.model, [Target(champion, 1.0)])
            log.info("reconcile: %s routed to the champion %s", self.model, champion)
            return [champion]
        return [t.version for t in targets]

    def observe(self) -> ReconcileReport:
        """What each replica serves and how it differs from the champion; changes nothing."""
        champion, observed, _, drift = self._compare(repair=False)
        return ReconcileReport(champion, observed, drift)

    def once(self) -> ReconcileReport:
        """One pass: observe, repair, export (the fleet loop runs it after any deploy, under the fleet lease)."""
        champion, observed, repairs, drift = self._compare()
        repaired, failed = [], []
        for fix in repairs:
            try:
                replace_adapter(self.fleet.replica(fix.replica), fix.name, fix.path, served=fix.served)
            except (ReplicaUnavailable, DeployError) as exc:
                log.error("reconcile: could not repair %s (%s): %s", fix.replica, fix.reason, exc)
                failed.append(fix.replica)
                continue
            log.warning("reconcile: %s: %s; loaded %s", fix.replica, fix.reason, champion)
            repaired.append(fix.replica)
        for item in drift.get("unrouted", []):
            url, name = item.split(" ", 1)
            try:
                self.fleet.replica(url).unload(name)
                log.warning("reconcile: %s: %s is routed to by nobody; unloaded", url, name)
            except (ReplicaUnavailable, DeployError) as exc:
                log.error("reconcile: could not unload %s from %s: %s", name, url, exc)
        for url, adapters in observed.items():
            self._misses[url] = self._misses.get(url, 0) + 1 if adapters is None else 0
        for url in set(self._misses) - set(observed):
            del self._misses[url]  # scaled in
        alerting = sorted(url for url, n in self._misses.items() if n >= self.fleet.settings.unreachable_alert_after)
        if drift["unknown"]:
            log.warning("reconcile: adapters not in the registry: %s", ", ".join(drift["unknown"]))
        report = ReconcileReport(champion, observed, drift, repaired, failed, alerting)
        if self.metrics is not None:
            self._export(report)
        return report

    def _export(self, report: ReconcileReport) -> None:
        m = self.metrics
        assert m is not None
        up = sum(1 for a in report.replicas.values() if a is not None)
        m.replicas.labels("up").set(up)
        m.replicas.labels("down").set(len(report.replicas) - up)
        for kind, items in report.drift.items():
            m.drift.labels(kind).set(len(items))
        m.repairs.labels("ok").inc(len(report.repaired))
        m.repairs.labels("failed").inc(len(report.failed))
        m.unreachable.set(len(report.alerting))
        m.last_reconcile.set(time.time())

"""Rolling an adapter out to the fleet (or back), as the recorded state machine of deploys.py.

Never in place: a name reloaded in place stays slower until the server restarts (bench/swap.py
measures the steady state after swaps). Two ways to move clients, `fleet.routing`:

* `gateway`: every version is loaded under its own name; `taoflow gateway` maps the stable
  name (`model.served_name`) to versions by the route table (store/routes.py). Rollout loads
  the version wave by wave, sends it `fleet.canary_weight` of the traffic once the canary
  serves it, all of it once every wave does; the drain step waits until every live gateway
  applies the new routes and has no request in flight on the old version, then unloads it.
  No request fails.
* `direct`: clients call the replicas; the stable name is unloaded and loaded again from the
  new version's directory (`replace_adapter`) — a window of milliseconds in which a request
  for it gets a 404 (bench/swap.py counts them); a load that fails reinstates what it served.

Promote: preflight (files, rank, base model) → canary (the version under its own name on
the first wave) → shadow (`fleet.shadow.enabled`: mirrored live requests judged before anyone is
served by it; fleet/shadow.py) → smoke (held-out prompts through the canary: new version vs live one,
gate scorers) → rollout (wave by wave) → drain (gateway routing) → registry promote → watch.
Any failure → revert: every switched replica (or the route) gets the previous adapter back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from taoflow.connectors.errors import ArtifactError, DeployError, ReplicaUnavailable
from taoflow.connectors.generation.fleet import FleetGenerator
from taoflow.connectors.protocols import replace_adapter
from taoflow.connectors.serving.adapter_check import base_shapes, preflight_adapter
from taoflow.daemon.fleet.replicas import Fleet
from taoflow.daemon.fleet.shadow import ShadowStep
from taoflow.daemon.round.evaluation import evaluate, slices
from taoflow.daemon.round.parts import TaskScorers, build_gate_scorers, resolve_model
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.deploys import DeployRecord, DeployStore
from taoflow.daemon.store.routes import RouteStore, Target
from taoflow.daemon.store.shadows import ShadowStore
from taoflow.daemon.store.state import State
from taoflow.policies.gate import GatePolicy, decide_gate
from taoflow.policies.rollout import plan_rollout

__all__ = ["Deployer"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Deployer:
    """Starts, carries on and reverts the deploys of one served model."""

    def __init__(
        self,
        settings: Settings,
        state: State,
        fleet: Fleet,
        *,
        scorers: TaskScorers,
        on_finished: Callable[[DeployRecord], None] = lambda record: None,
    ) -> None:
        self.settings = settings
        self.f = settings.fleet
        self.state = state
        self.fleet = fleet
        self.scorers = scorers
        self.model = settings.model.served_name
        self.deploys = DeployStore(state.db)
        self.routes = RouteStore(state.db)
        self.versioned = self.f.routing == "gateway"
        gate_scorers = build_gate_scorers(settings)
        self.shadow = ShadowStep(
            settings,
            self.deploys,
            ShadowStore(state.db),
            gate_scorers or scorers,
            training=scorers if gate_scorers is not None else None,
        )
        self._on_finished = on_finished

    # ------------------------------------------------------------------ starting
    def promote(self, version: str, *, trigger: str, reason: str) -> DeployRecord:
        return self.run(self.start_promote(version, trigger=trigger, reason=reason))

    def rollback(self, *, to: str | None = None, trigger: str, reason: str) -> DeployRecord:
        return self.run(self.start_rollback(to=to, trigger=trigger, reason=reason))

    def start_promote(self, version: str, *, trigger: str, reason: str) -> DeployRecord:
        """Record a promote deploy (not yet carried out)."""
        return self._start("promote", version, trigger=trigger, reason=reason)

    def start_rollback(self, *, to: str | None = None, trigger: str, reason: str) -> DeployRecord:
        """Record a rollback to `to` (default: the `previous` alias), not yet carried out."""
        target = to or self.state.registry.rollback_target(self.model)
        self.state.registry.get(target)  # unknown versions fail here, before anything is recorded
        return self._start("rollback", target, trigger=trigger, reason=reason)

    def _start(self, kind: str, version: str, *, trigger: str, reason: str) -> DeployRecord:
        running = self.deploys.open(self.model)
        if running is not None:
            raise DeployError(f"deploy {running.id} ({running.kind} {running.version}) is still {running.status}")
        views = self.fleet.observe()
        plan = plan_rollout(
            list(views),
            canary=self.f.canary_replicas,
            batch_size=self.f.batch_size,
            smoke=kind == "promote",
            unreachable={url for url, view in views.items() if view is None},
        )
        log.info("deploy %s %s: %s", kind, version, plan.reason)
        return self.deploys.start(
            model=self.model,
            kind=kind,
            trigger=trigger,
            version=version,
            from_version=self.state.registry.alias(self.model, "champion"),
            waves=[list(w) for w in plan.waves],
            reason=reason,
        )

    # ------------------------------------------------------------------ the machine
    def run(self, record: DeployRecord) -> DeployRecord:
        """Carry a deploy on from its recorded step until it is watching, done or reverted."""
        steps = {
            "preflight": self._preflight,
            "canary": self._canary,
            "shadow": self._shadow,
            "smoke": self._smoke,
            "rollout": self._rollout_versions if self.versioned else self._rollout,
            "drain": self._drain,
            "registry": self._registry,
        }
        while record.status == "running":
            step = record.step
            try:
                record = steps[step](record)
                if step == record.step == "shadow" and record.status == "running":
                    break  # gathering pairs: the fleet loop carries it on at its next pass
            except ArtifactError as exc:  # refused before any replica served it
                record = self._refuse(record, str(exc))
            except (DeployError, ReplicaUnavailable) as exc:
                # DeployError: a replica refused the adapter or the smoke failed, the adapter's fault;
                # ReplicaUnavailable: the fleet's, and the adapter stays gated for another try.
                fault = "adapter" if isinstance(exc, DeployError) else "fleet"
                log.error("deploy %d failed at %s: %s", record.id, record.step, exc)
                record = self.deploys.get(record.id)  # the step may have recorded more before it failed
                record = self.deploys.update(
                    record.id,
                    status="reverting",
                    reason=f"{record.step}: {exc}",
                    detail={**record.detail, "fault": fault},
                )
        if record.status == "reverting":
            record = self._revert(record)
        if record.status in ("watching", "done", "reverted", "failed"):
            self._on_finished(record)
        return record

    def _preflight(self, record: DeployRecord) -> DeployRecord:
        registry = self.state.registry
        adapter = registry.get(record.version)
        wanted = ("gated",) if record.kind == "promote" else ("retired", "gated")
        if adapter.model != self.model or adapter.state not in wanted:
            raise ArtifactError(
                f"{record.version} is {adapter.state} ({adapter.model}); a {record.kind} needs "
                f"{' or '.join(wanted)} of {self.model}"
            )
        base = resolve_model(self.settings)
        if adapter.base_digest != base.digest:
            raise ArtifactError(
                f"{record.version} was trained on base {adapter.base_model} ({adapter.base_digest[:19]}), "
                f"the fleet serves {base.reference} ({base.digest[:19]})"
            )
        preflight_adapter(
            self.state.store.fetch(record.version), base=base_shapes(base.path), max_rank=self.f.max_lora_rank
        )
        if not record.waves:
            return self.deploys.update(record.id, step="registry")
        return self.deploys.update(record.id, step="canary" if record.kind == "promote" else "rollout")

    def _canary(self, record: DeployRecord) -> DeployRecord:
        self._load_canary(record)
        if self.versioned and self.f.shadow.enabled and record.kind == "promote":
            return self.deploys.update(record.id, step="shadow")
        return self.deploys.update(record.id, step="smoke" if self.f.smoke_prompts else "rollout")

    def _load_canary(self, record: DeployRecord) -> None:
        """The version under its own name on the first wave (idempotent: a replica that serves it is left alone)."""
        path = self.fleet.server_path(record.version)
        for url in record.waves[0]:
            replica = self.fleet.replica(url)
            if self._retry(replica.view).adapters.get(record.version) != path:
                self._retry(partial(replica.load, record.version, path))

    def _shadow(self, record: DeployRecord) -> DeployRecord:
        """Mirrored live traffic judges the candidate before anyone is served by it (fleet/shadow.py). Each pass
        loads it again where a replica lost it (restarted, say): the gateways mirror only to replicas that serve it."""
        if "verdict" not in record.detail.get("shadow", {}):
            self._load_canary(record)
        record, verdict = self.shadow.run(record)
        if verdict is None:
            return record
        if verdict.passed:
            return self.deploys.update(record.id, step="smoke" if self.f.smoke_prompts else "rollout")
        # Too few pairs is the traffic's doing, not the adapter's: it stays gated for another try.
        fault = "fleet" if verdict.monitors.passed and verdict.decision.outcome == "too_few_samples" else "adapter"
        log.error("deploy %d: the shadow rejected %s: %s", record.id, record.version, verdict.reason)
        return self.deploys.update(
            record.id,
            status="reverting",
            reason=f"shadow: {verdict.reason}",
            detail={**record.detail, "fault": fault},
        )

    def _smoke(self, record: DeployRecord) -> DeployRecord:
        """The gate's evaluation, served by the canary: the new version against what clients get now."""
        canary = self.fleet.replica(record.waves[0][0])
        heldout = [p.record for p in self.state.buffer.heldout()][: self.f.smoke_prompts]
        if not heldout:
            return self.deploys.update(record.id, step="rollout", detail={"smoke": "no held-out prompts: skipped"})
        view = self._retry(canary.view)
        if self.versioned:
            live = record.from_version if record.from_version in view.adapters else view.base
        else:
            live = self.model if self.model in view.adapters else view.base
        results = {
            side: evaluate(
                FleetGenerator([canary], served_name=served),
                heldout,
                self.scorers,
                adapter=None,
                max_new_tokens=self.settings.gate.max_new_tokens,
            )
            for side, served in (("candidate", record.version), ("live", live))
        }
        tol = self.f.smoke_max_regression
        policy = GatePolicy(
            min_mean_improvement=-tol, max_slice_regression=tol, min_samples=1, min_slice_samples=1, confidence=0.0
        )
        decision = decide_gate(slices(results["candidate"], results["live"]), policy)
        smoke = {"passed": decision.passed, "reason": decision.reason, "replica": canary.url, "against": live}
        record = self.deploys.update(record.id, detail={**record.detail, "smoke": smoke})
        if not decision.passed:
            raise DeployError(f"smoke evaluation on the canary failed: {decision.reason}")
        return self.deploys.update(record.id, step="rollout")

    def _rollout(self, record: DeployRecord) -> DeployRecord:
        path = self.fleet.server_path(record.version)
        for wave in record.waves:
            record = self._switch_wave(record, wave, lambda url: self._switch(url, self.model, path))
        for url in record.waves[0] if record.kind == "promote" else ():
            self._quietly(partial(self.fleet.replica(url).unload, record.version))
        return self.deploys.update(record.id, step="registry")

    def _switch_wave(self, record: DeployRecord, wave: list[str], switch: Callable[[str], None]) -> DeployRecord:
        """`switch` each replica of a wave not yet switched or skipped, recording which; an unreachable one is
        skipped while `max_unavailable` allows (the reconciler brings it up later)."""
        for url in wave:
            if url in record.switched or url in record.skipped:
                continue
            try:
                switch(url)
            except ReplicaUnavailable as exc:
                if len(record.skipped) >= self.f.max_unavailable:
                    raise
                log.warning("deploy %d skips %s (reconciled later): %s", record.id, url, exc)
                record = self.deploys.update(record.id, skipped=[*record.skipped, url])
                continue
            record = self.deploys.update(record.id, switched=[*record.switched, url])
        return record

    def _rollout_versions(self, record: DeployRecord) -> DeployRecord:
        """Gateway routing: load the version under its own name wave by wave; route the stable name to it."""
        path = self.fleet.server_path(record.version)
        previous = record.from_version if record.from_version != record.version else None
        weight = self.f.canary_weight if record.kind == "promote" else 0.0

        def load(url: str) -> None:
            replica = self.fleet.replica(url)
            if self._retry(replica.view).adapters.get(record.version) != path:
                self._retry(partial(replica.load, record.version, path))

        for index, wave in enumerate(record.waves):
            record = self._switch_wave(record, wave, load)
            last = index + 1 == len(record.waves)
            if index == 0 and not last and previous and 0 < weight < 1 and "canary_generation" not in record.detail:
                targets = [Target(previous, 1 - weight), Target(record.version, weight)]
                generation = self.routes.set(self.model, targets)
                log.info(
                    "deploy %d: %s gets %.0f%% of %s (routes %d)",
                    record.id,
                    record.version,
                    100 * weight,
                    self.model,
                    generation,
                )
                record = self.deploys.update(record.id, detail={**record.detail, "canary_generation": generation})
        generation = self.routes.set(self.model, [Target(record.version, 1.0)])
        log.info("deploy %d: %s routed to %s (routes %d)", record.id, self.model, record.version, generation)
        return self.deploys.update(record.id, step="drain", detail={**record.detail, "route_generation": generation})

    def _drain(self, record: DeployRecord) -> DeployRecord:
        """Wait until the gateways have left the old version (bounded), then unload it everywhere."""
        old = record.from_version
        if old and old != record.version:
            generation = int(record.detail.get("route_generation", 0))
            drained = self._wait_drained(old, generation, since=record.updated_at)
            for url in self.fleet.urls():
                self._quietly(partial(self._unload, url, old))
            record = self.deploys.update(record.id, detail={**record.detail, "drained": drained})
        return self.deploys.update(record.id, step="registry")

    def _wait_drained(self, name: str, generation: int, *, since: float) -> bool:
        """True once every live gateway applies `generation` with nothing in flight on `name`; False at the
        deadline (`drain_timeout_seconds` after `since`: a resumed deploy does not wait twice)."""
        deadline = since + self.f.drain_timeout_seconds
        while True:
            drain = self.routes.drained(name, generation=generation, stale_after=self.f.gateway_stale_seconds)
            if drain.done:
                return True
            if time.time() >= deadline:
                log.warning("unloading %s before every gateway drained it: %s", name, drain.waiting)
                return False
            time.sleep(0.2)

    def _unload(self, url: str, name: str) -> None:
        replica = self.fleet.replica(url)
        if name in replica.view().adapters:
            replica.unload(name)

    def _registry(self, record: DeployRecord) -> DeployRecord:
        registry = self.state.registry
        if registry.alias(self.model, "champion") != record.version:
            reason = f"deploy {record.id} ({record.trigger}): {record.reason}"
            if record.kind == "promote":
                registry.promote(record.version, reason=reason)
            else:
                registry.rollback(self.model, to=record.version, reason=reason)
        self.deploys.supersede(self.model, by=record.id)
        watched = record.kind == "promote" and self.settings.fleet.watch.window_seconds > 0 and record.waves
        return self.deploys.update(
            record.id, step="watch" if watched else "done", status="watching" if watched else "done"
        )

    def _refuse(self, record: DeployRecord, reason: str) -> DeployRecord:
        log.error("deploy %d refused %s: %s", record.id, record.version, reason)
        adapter = self.state.registry.get(record.version)
        if record.kind == "promote" and adapter.state == "gated":
            self.state.registry.transition(record.version, "rejected", reason=f"refused by the fleet: {reason}")
        if record.switched or record.step != "preflight":
            return self.deploys.update(
                record.id, status="reverting", reason=reason, detail={**record.detail, "fault": "adapter"}
            )
        return self.deploys.update(record.id, status="failed", reason=reason)

    # ------------------------------------------------------------------ reverting
    def _revert(self, record: DeployRecord) -> DeployRecord:
        """Give every switched replica the adapter it served before; drop the version's own name."""
        if self.versioned:
            return self._revert_route(record)
        previous = self.fleet.server_path(record.from_version) if record.from_version else None
        unreverted = []
        canary = set(record.waves[0]) if record.kind == "promote" and record.waves else set()
        for url in sorted({*record.switched, *canary}):
            try:
                if url in record.switched:
                    if previous is not None:
                        self._switch(url, self.model, previous)
                    else:
                        self.fleet.replica(url).unload(self.model)
                if url in canary:  # the version's own name, loaded for the smoke evaluation
                    self.fleet.replica(url).unload(record.version)
            except ReplicaUnavailable as exc:
                log.error("deploy %d cannot revert %s now (the reconciler will): %s", record.id, url, exc)
                unreverted.append(url)
        adapter = self.state.registry.get(record.version)
        if record.kind == "promote" and adapter.state == "gated" and record.detail.get("fault") == "adapter":
            self.state.registry.transition(record.version, "rejected", reason=f"deploy {record.id}: {record.reason}")
        detail = {**record.detail, "unreverted": unreverted}
        return self.deploys.update(record.id, status="reverted", switched=[], detail=detail)

    def _revert_route(self, record: DeployRecord) -> DeployRecord:
        """Gateway routing: route the stable name back to what it served, drain the version, unload it."""
        self.shadow.stop(record)
        previous = record.from_version if record.from_version != record.version else None
        path = self.fleet.server_path(previous) if previous else None
        unreverted = []
        if previous and path:
            for url in record.switched:  # normally still loaded: the old version is unloaded only after the drain
                replica = self.fleet.replica(url)
                try:
                    if self._retry(replica.view).adapters.get(previous) != path:
                        self._retry(partial(replica.load, previous, path))
                except (ReplicaUnavailable, DeployError) as exc:
                    log.error(
                        "deploy %d cannot reload %s on %s (the reconciler will): %s", record.id, previous, url, exc
                    )
                    unreverted.append(url)
        generation = self.routes.set(self.model, [Target(previous, 1.0)] if previous else [])
        if record.kind == "promote":
            self._wait_drained(record.version, generation, since=time.time())
            canary = set(record.waves[0]) if record.waves else set()
            for url in sorted({*record.switched, *canary}):
                try:
                    self._unload(url, record.version)
                except ReplicaUnavailable as exc:
                    log.error("deploy %d cannot unload %s from %s now: %s", record.id, record.version, url, exc)
                    unreverted.append(url)
        adapter = self.state.registry.get(record.version)
        if record.kind == "promote" and adapter.state == "gated" and record.detail.get("fault") == "adapter":
            self.state.registry.transition(record.version, "rejected", reason=f"deploy {record.id}: {record.reason}")
        detail = {**record.detail, "unreverted": sorted(set(unreverted)), "route_generation": generation}
        return self.deploys.update(record.id, status="reverted", switched=[], detail=detail)

    def _switch(self, url: str, name: str, path: str) -> None:
        replica = self.fleet.replica(url)
        # What it serves is read again on each try: a try that unloaded and then failed left nothing to unload.
        self._retry(lambda: replace_adapter(replica, name, path, served=replica.view().adapters.get(name)))

    def _retry(self, call: Callable[[], T]) -> T:
        for attempt in range(self.f.retries):
            try:
                return call()
            except ReplicaUnavailable as exc:
                if attempt + 1 == self.f.retries:
                    raise
                time.sleep(min(exc.delay, 1.0 * (attempt + 1)))
        raise AssertionError("unreachable")

    @staticmethod
    def _quietly(call: Callable[[], Any]) -> None:
        try:
            call()
        except ReplicaUnavailable as exc:
            log.warning("%s (left for the reconciler)", exc)

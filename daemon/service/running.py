"""`taoflow run`: the long-running service, put together.

One supervisor owns the named tasks: `source` (Kafka or S3, when configured), `scheduler`
(APScheduler asking the retrain policy, see flywheel.py) and `admin` (the HTTP API with
/metrics, /healthz, /readyz). SIGTERM stops them in order: the source stops fetching and
commits what it stored, the scheduler stops, then a running round is asked to stop at its
next checkpoint (killed after daemon.drain_seconds); its recorded step makes the next
start resume it. Nothing here imports torch: rounds run in their own processes.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from taoflow.connectors.errors import Busy, ConfigurationError, InvalidRequest, NothingToTrain
from taoflow.daemon.fleet.loop import FleetLoop
from taoflow.daemon.fleet.metrics import FleetMetrics
from taoflow.daemon.ingest.metrics import IngestMetrics
from taoflow.daemon.service.admin import Change, create_app
from taoflow.daemon.service.flywheel import Flywheel
from taoflow.daemon.service.metrics import DaemonMetrics, StateCollector
from taoflow.daemon.service.supervisor import Supervisor, TaskFailed
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.deploys import DeployStore
from taoflow.daemon.store.state import open_state
from taoflow.policies.retrain import RetrainDecision

__all__ = ["Service", "admin_token"]

log = logging.getLogger(__name__)


def admin_token(settings: Settings) -> str:
    d = settings.daemon
    if d.admin_token is not None and d.admin_token.get_secret_value():
        return d.admin_token.get_secret_value()
    if d.admin_token_file is not None:
        try:
            token = d.admin_token_file.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read daemon.admin_token_file: {exc}") from None
        if token:
            return token
    raise ConfigurationError(
        "the admin API needs a token: set TAOFLOW_DAEMON__ADMIN_TOKEN or daemon.admin_token_file (a mounted secret)"
    )


class Service:
    def __init__(self, settings: Settings, *, config_path: Path | None = None) -> None:
        self.settings = settings
        self.model = settings.model.served_name
        self.token = admin_token(settings)
        self.state = open_state(settings)
        self.registry = CollectorRegistry()
        self.ingest_metrics = IngestMetrics(self.registry)
        self.metrics = DaemonMetrics(self.registry)
        self.registry.register(StateCollector(self.state.db, self.state.buffer, self.state.registry, self.model))
        d = settings.daemon
        self.supervisor = Supervisor(
            max_restarts=d.max_restarts,
            window_s=d.restart_window_seconds,
            backoff_s=d.restart_backoff_seconds,
            on_restart=lambda name: self.metrics.task_restarts.labels(name).inc(),
        )
        round_command = [sys.executable, "-m", "taoflow.daemon.cli", "round", "--owner-pid", str(os.getpid())]
        round_command += ["--no-progress", "--state-dir", str(settings.storage.state_dir)]
        if config_path is not None:
            round_command += ["--config", str(config_path)]
        self.fleet_loop: FleetLoop | None = None
        if settings.fleet.configured:
            self.fleet_loop = FleetLoop(settings, self.state, metrics=FleetMetrics(self.registry))
            if settings.fleet.auto_deploy:
                round_command.append("--no-promote")  # the gate passes; the fleet deploy promotes
        self.flywheel = Flywheel(
            settings, self.state, self.metrics, round_command=round_command, config_path=config_path
        )
        self.flywheel.seed_metrics()
        self.ready = threading.Event()
        self.admin_port: int | None = None

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        """Until SIGTERM/SIGINT (exit 0) or a task out of restarts (exit 1)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.supervisor.stop())
        if self.settings.source.kind != "jsonl":
            self.supervisor.add("source", self._source)
        self.supervisor.add("scheduler", self.flywheel.run)
        if self.fleet_loop is not None:
            self.supervisor.add("fleet", self.fleet_loop.run)
        self.supervisor.add("admin", self._admin)
        code = 0
        try:
            self.supervisor.run(join_timeout_s=max(30.0, self.settings.daemon.drain_seconds))
        except TaskFailed as exc:
            log.error("stopping: %s", exc)
            code = 1
        self.flywheel.stop_round()
        self.state.close()
        log.info("stopped")
        return code

    def _source(self, stop: threading.Event) -> None:
        from taoflow.daemon.ingest.sources import run_source

        run_source(self.settings, self.state, stop=stop, metrics=self.ingest_metrics)
        if not stop.is_set():
            raise RuntimeError("the source stopped by itself")

    def _admin(self, stop: threading.Event) -> None:
        import uvicorn

        d = self.settings.daemon
        config = uvicorn.Config(
            create_app(self, token=self.token, metrics=self.registry),
            host=d.admin_host,
            port=d.admin_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="admin-server", daemon=True)
        thread.start()
        try:
            while not server.started:
                if not thread.is_alive():
                    raise RuntimeError(f"the admin API could not listen on {d.admin_host}:{d.admin_port}")
                if stop.wait(0.05):
                    return
            self.admin_port = int(server.servers[0].sockets[0].getsockname()[1])
            log.info("admin API on http://%s:%d (taoflow started, ready)", d.admin_host, self.admin_port)
            self.ready.set()
            while not stop.wait(0.5):
                if not thread.is_alive():
                    raise RuntimeError("the admin API server stopped")
        finally:
            self.ready.clear()
            server.should_exit = True
            thread.join(10)

    # ------------------------------------------------------------------ answers (the admin API's backend)
    def readiness(self) -> tuple[bool, dict[str, bool]]:
        tasks = self.supervisor.running()
        return self.ready.is_set() and all(tasks.values()) and self.database_ok(), tasks

    def dry_run(self) -> RetrainDecision:
        return self.flywheel.dry_run()

    def pause(self, reason: str) -> None:
        self.flywheel.controls.set_paused(True, reason=reason)

    def resume(self) -> None:
        self.flywheel.controls.set_paused(False, reason="resumed")
        self.flywheel.controls.reset_rejections()

    def trigger(self, *, tasks: Sequence[str], max_prompts: int | None, reason: str) -> None:
        """Refused up front when nothing could be trained: an unknown task, or no new prompts."""
        counts = {task: c.new for task, c in self.state.buffer.stats().tasks.items()}
        held = ", ".join(f"{task} ({n} new)" for task, n in counts.items()) or "no task yet"
        unknown = [task for task in tasks if task not in counts]
        if unknown:
            raise InvalidRequest(f"unknown task {', '.join(map(repr, unknown))}; the buffer holds {held}")
        if not any(counts[task] for task in tasks or counts):
            raise NothingToTrain(f"no new training prompts in {', '.join(tasks) or 'any task'} ({held})")
        if not self.flywheel.trigger(tasks=tasks, max_prompts=max_prompts, reason=reason):
            raise Busy("a round is already running")

    def promote(self, version: str, *, reason: str) -> Change:
        registry = self.state.registry
        registry.get(version)  # an unknown version is refused before anything is recorded
        if self.fleet_loop is not None:  # through the fleet: canary, smoke, waves, then the registry
            record = self.fleet_loop.request_promote(version, reason=reason)
            return Change(True, f"deploy {record.id} rolls {version} out to the fleet")
        registry.promote(version, reason=reason)
        return Change(False, f"{version} is the champion")

    def rollback(self, to: str | None, *, reason: str) -> Change:
        registry = self.state.registry
        if to is not None:
            registry.get(to)
        if self.fleet_loop is not None:
            record = self.fleet_loop.request_rollback(to=to, reason=reason)
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

    def database_ok(self) -> bool:
        try:
            self.state.db.query("SELECT 1")
        except Exception:  # readiness says no; the error itself shows up in every other path
            return False
        return True

    def status(self) -> dict[str, Any]:
        stats = self.state.buffer.stats()
        registry = self.state.registry
        flywheel = self.flywheel
        rows = self.state.db.query(
            "SELECT id, step, status, reason, version, started_at, updated_at FROM rounds WHERE model=?"
            " ORDER BY id DESC LIMIT 5",
            (self.model,),
        )
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
            "rounds": [dict(r) for r in rows],
            "next_trigger": {
                "trigger": decision.trigger,
                "rule": decision.rule,
                "reason": decision.reason,
                "next_check_at": decision.next_check_at,
                "alert": decision.alert,
            },
            "tasks": self.supervisor.running(),
        }

    def fleet_status(self) -> dict[str, Any]:
        deploys = [
            {k: getattr(d, k) for k in ("id", "kind", "trigger", "version", "from_version", "status", "step", "reason")}
            for d in DeployStore(self.state.db).latest(self.model, limit=5)
        ]
        if self.fleet_loop is None:
            return {"configured": False, "replicas": {}, "drift": {}, "deploys": deploys}
        report = self.fleet_loop.reconciler.observe()
        return {
            "configured": True,
            "champion": report.champion,
            "replicas": report.replicas,
            "drift": report.drift,
            "unreachable_alert": self.fleet_loop.last_report.alerting if self.fleet_loop.last_report else [],
            "deploys": deploys,
        }

    def log_error(self, path: str, exc: Exception) -> None:
        log.error("admin API error at %s: %s: %s", path, type(exc).__name__, exc)

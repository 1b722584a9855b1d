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
import socket
import sys
import threading
import time
from functools import partial
from pathlib import Path

from prometheus_client import CollectorRegistry

from taoflow.connectors.errors import Busy, ConfigurationError
from taoflow.daemon.fleet.loop import FleetLoop
from taoflow.daemon.fleet.metrics import FleetMetrics
from taoflow.daemon.ingest.metrics import IngestMetrics
from taoflow.daemon.logs import LogFormat, relay_line
from taoflow.daemon.round.launcher import EXIT_OUTCOMES
from taoflow.daemon.round.parts import build_scorers
from taoflow.daemon.service.admin import create_app
from taoflow.daemon.service.answers import Answers
from taoflow.daemon.service.flywheel import Flywheel
from taoflow.daemon.service.metrics import DaemonMetrics
from taoflow.daemon.service.state_metrics import StateCollector
from taoflow.daemon.service.supervisor import Supervisor, TaskFailed
from taoflow.daemon.settings import (
    Settings,
    admin_token,
    gateway_token,
    metrics_token,
    ray_runner_problems,
    ray_token,
)
from taoflow.daemon.store.lease import Lease
from taoflow.daemon.store.retention import RetentionPolicy, apply_retention
from taoflow.daemon.store.rounds import STEPS
from taoflow.daemon.store.state import open_state

__all__ = ["Service"]

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: Settings, *, config_path: Path | None = None, log_format: LogFormat = "text") -> None:
        self.settings = settings
        self.model = settings.model.served_name
        self.token = admin_token(settings)
        self.metrics_token = metrics_token(settings)
        if self.metrics_token == self.token:
            raise ConfigurationError("daemon.metrics_token must differ from the admin token (it is the read-only one)")
        self.gateway_token = gateway_token(settings)
        if self.gateway_token == self.token:
            raise ConfigurationError("daemon.gateway_token must differ from the admin token (it may only read routes)")
        build_scorers(settings)  # every scorer is built once now: a bad one stops the start, not a round hours later
        if problems := ray_runner_problems(settings):
            raise ConfigurationError("round.runner is ray, but " + "; ".join(problems))
        ray_token(settings)  # a token file that cannot be read, or a short token, stops the start too
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
            max_retry_s=d.max_retry_seconds,
            on_restart=lambda name: self.metrics.task_restarts.labels(name).inc(),
        )
        round_command = [sys.executable, "-m", "taoflow.daemon.cli", "round", "--owner-pid", str(os.getpid())]
        round_command += ["--no-progress", "--log-format", log_format, "--state-dir", str(settings.storage.state_dir)]
        if config_path is not None:
            round_command += ["--config", str(config_path)]
        self.fleet_loop: FleetLoop | None = None
        if settings.fleet.configured:
            self.fleet_loop = FleetLoop(settings, self.state, metrics=FleetMetrics(self.registry))
            if settings.fleet.auto_deploy:
                round_command.append("--no-promote")  # the gate passes; the fleet deploy promotes
        self.flywheel = Flywheel(
            settings,
            self.state,
            self.metrics,
            round_command=round_command,
            config_path=config_path,
            relay=lambda line, tag: relay_line(line, tag=tag, fmt=log_format),
        )
        self.flywheel.seed_metrics()
        self.ready = threading.Event()
        self.admin_port: int | None = None
        self.lease = Lease(self.state.db, "daemon", stale_after_s=settings.daemon.lock_stale_seconds)
        self.answers = Answers(
            self.state,
            model=self.model,
            flywheel=self.flywheel,
            supervisor=self.supervisor,
            fleet_loop=self.fleet_loop,
            ready=self.ready,
        )
        self._socket: socket.socket | None = None

    # ------------------------------------------------------------------ running
    def run(self) -> int:
        """Until SIGTERM/SIGINT (exit 0) or a task out of restarts (exit 1). A second daemon on the same state or
        port is refused before it reads anything (Busy, ConfigurationError)."""
        self._take_state()
        self._listen()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.supervisor.stop())
        if self.settings.source.kind != "jsonl":
            self.supervisor.add("source", self._source)
        self.supervisor.add("scheduler", self.flywheel.run)
        if self.fleet_loop is not None:
            self.supervisor.add("fleet", self.fleet_loop.run)
        self.supervisor.add("admin", self._admin)
        self.supervisor.add("retention", self._retention)
        self._seed_metrics()
        code = 0
        try:
            self.supervisor.run(join_timeout_s=max(30.0, self.settings.daemon.drain_seconds))
        except TaskFailed as exc:
            log.error("stopping: %s", exc)
            code = 1
        self.flywheel.stop_round()
        self.lease.release()
        self.state.close()
        log.info("stopped")
        return code

    def _seed_metrics(self) -> None:
        """Every label value known at start is exported from zero: a rate() over a series that appears at its
        first event misses that event, and an absent series looks like a healthy one."""
        for name in self.supervisor.running():
            self.metrics.task_restarts.labels(name)
            self.metrics.task_up.labels(name).set_function(partial(self._task_up, name))
        for outcome in {*EXIT_OUTCOMES.values(), "error"}:
            self.metrics.round_exits.labels(outcome)
        for step in STEPS[1:]:
            self.metrics.step_seconds.labels(step)
        for task in {*self.settings.score.tasks, *self.state.buffer.stats().tasks}:
            self.metrics.candidate_scores.labels(task)
        if self.settings.source.kind != "jsonl":
            self.ingest_metrics.ingested.labels(self.settings.source.kind)
            self.ingest_metrics.duplicates.labels(self.settings.source.kind)

    def _task_up(self, name: str) -> float:
        return 1.0 if self.supervisor.running().get(name) else 0.0

    def _take_state(self) -> None:
        holder = self.lease.acquire()
        if holder is not None:
            raise Busy(
                f"another taoflow daemon ({holder.owner}) runs on the state in {self.settings.storage.state_dir} "
                f"since {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(holder.acquired_at))}: stop it first"
            )
        self.lease.keep_renewed()

    def _listen(self) -> socket.socket:
        """The admin API's socket, bound now: a port in use is refused at start, not after the source began."""
        if self._socket is not None and self._socket.fileno() != -1:
            return self._socket
        d = self.settings.daemon
        family, kind, proto, _, address = socket.getaddrinfo(d.admin_host, d.admin_port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            self.lease.release()
            raise ConfigurationError(
                f"the admin API cannot listen on {d.admin_host}:{d.admin_port}: {exc.strerror} "
                "(another daemon there? set daemon.admin_port)"
            ) from None
        sock.listen(128)
        self._socket = sock
        return sock

    def _source(self, stop: threading.Event) -> None:
        from taoflow.daemon.ingest.configured import run_source

        run_source(
            self.settings,
            self.state,
            stop=stop,
            metrics=self.ingest_metrics,
            on_healthy=lambda: self.supervisor.recovered("source"),
        )
        if not stop.is_set():
            raise RuntimeError("the source stopped by itself")

    def _retention(self, stop: threading.Event) -> None:
        """Every storage.retention.interval_seconds: consumed prompts lose their text, old dead letters go."""
        r = self.settings.storage.retention
        policy = RetentionPolicy(
            consumed_text_days=r.consumed_days, dead_letter_days=r.dead_letter_days, dead_letter_max=r.dead_letter_max
        )
        while not stop.wait(r.interval_seconds):
            report = apply_retention(self.state.db, policy)
            self.metrics.retention_removed.labels("prompt_text").inc(report.texts_dropped)
            self.metrics.retention_removed.labels("dead_letter").inc(report.dead_letters_deleted)
            if report.texts_dropped or report.dead_letters_deleted:
                log.info(
                    "retention: %d consumed prompts lost their text, %d dead letters deleted, %d pages given back",
                    report.texts_dropped,
                    report.dead_letters_deleted,
                    report.pages_freed,
                )

    def _admin(self, stop: threading.Event) -> None:
        import uvicorn

        d = self.settings.daemon
        config = uvicorn.Config(
            create_app(
                self.answers,
                token=self.token,
                metrics=self.registry,
                metrics_token=self.metrics_token,
                gateway_token=self.gateway_token,
            ),
            host=d.admin_host,
            port=d.admin_port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        server = uvicorn.Server(config)
        sock = self._listen()
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="admin-server", daemon=True)
        thread.start()
        try:
            while not server.started:
                if not thread.is_alive():
                    raise RuntimeError(f"the admin API could not listen on {d.admin_host}:{d.admin_port}")
                if stop.wait(0.05):
                    return
            self.admin_port = int(server.servers[0].sockets[0].getsockname()[1])
            log.info(
                "admin API on http://%s:%d (taoflow started; /readyz says when every task is up)",
                d.admin_host,
                self.admin_port,
            )
            self.ready.set()
            while not stop.wait(0.5):
                if not thread.is_alive():
                    raise RuntimeError("the admin API server stopped")
        finally:
            self.ready.clear()
            server.should_exit = True
            thread.join(10)

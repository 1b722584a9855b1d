"""The daemon (admin API, fleet loop, route table) and one `taoflow gateway`, as real processes in front of the real
vLLM replicas; either may be killed and started again (tests/e2e/test_gateway.py, test_shadow.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.state import State
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import start_until_logged
from tests.support.state import store_adapter

__all__ = ["GATEWAY_TOKEN", "MODEL", "TOKEN", "Stack"]

MODEL = "support-bot"
TOKEN = "gateway-test-admin-token"
GATEWAY_TOKEN = "gateway-test-route-token"
CLI = [sys.executable, "-m", "taoflow.daemon.cli"]


class Stack:
    """`fleet` and `capture` add settings to their sections; `adapters` are registered gated; `champion` is promoted
    in the registry before the daemon starts (its reconciler then routes the stable name to it)."""

    def __init__(
        self,
        tmp_path: Path,
        replicas: list[Any],
        adapters: dict[str, Path],
        base_model: Any,
        *,
        fleet: dict[str, Any] | None = None,
        capture: dict[str, Any] | None = None,
        champion: str | None = None,
    ) -> None:
        self.admin_port, gateway_port = free_port(), free_port()
        self.gateway_port = gateway_port
        self.url = f"http://127.0.0.1:{gateway_port}"
        self.db = tmp_path / "state" / "taoflow.db"
        self.capture = tmp_path / "capture"
        config = {
            "storage": {"state_dir": str(tmp_path / "state")},
            "model": {"served_name": MODEL},
            "score": {"default": [{"type": "arithmetic"}]},
            "retrain": {"min_new_prompts": 1_000_000},
            "fleet": {
                "replicas": [s.url for s in replicas],
                "routing": "gateway",
                "auto_deploy": False,
                "smoke_prompts": 0,
                "canary_weight": 0.5,
                "reconcile_interval_seconds": 2,
                "gateway_stale_seconds": 10,
                "drain_timeout_seconds": 60,
                "watch": {"window_seconds": 0},
                **(fleet or {}),
            },
            "daemon": {"admin_port": self.admin_port, "admin_token": TOKEN, "gateway_token": GATEWAY_TOKEN},
            "gateway": {
                "port": gateway_port,
                "id": "gw-0",
                "routes_poll_seconds": 0.5,
                "replicas_poll_seconds": 1.0,
                "capture": {
                    "sink": "jsonl",
                    "jsonl_dir": str(self.capture),
                    "spool_dir": str(tmp_path / "spool"),
                    **(capture or {}),
                },
            },
        }
        self.config = tmp_path / "taoflow.yaml"
        self.config.write_text(yaml.safe_dump(config))
        state = State(load_settings(self.config))
        for name, directory in adapters.items():
            store_adapter(state, MODEL, name, directory, base_model, gated=True)
        if champion is not None:
            state.registry.promote(champion, reason="test: the live adapter")
        state.close()
        self.daemon: subprocess.Popen[str] | None = None
        self.gateway: subprocess.Popen[str] | None = None
        self.logs: tuple[list[str], list[str]] = ([], [])

    def start_daemon(self) -> None:
        self.daemon, log = start_until_logged([*CLI, "run", "--config", str(self.config)], "taoflow started")
        self.logs = (log, self.logs[1])

    def start_gateway(self) -> None:
        self.gateway, log = start_until_logged([*CLI, "gateway", "--config", str(self.config)], "gateway")
        self.logs = (self.logs[0], log)
        wait_for_port(self.gateway_port)

    def kill(self, which: str) -> None:
        """SIGKILL the daemon or the gateway: no shutdown of its own runs."""
        process = self.daemon if which == "daemon" else self.gateway
        assert process is not None and process.poll() is None
        process.kill()
        process.wait(timeout=30)

    def __enter__(self) -> Stack:
        self.start_daemon()
        self.start_gateway()
        return self

    def __exit__(self, *exc: object) -> None:
        for process in (self.gateway, self.daemon):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()

"""The daemon image built from the Dockerfile (scripts/build-images.sh: podman, a debootstrap base where no registry
is reachable) and started as the chart runs it: uid 10001, a read-only root filesystem, all capabilities dropped,
the config mounted read-only at /etc/taoflow, a writable state volume and /tmp. `taoflow run` must answer /readyz
and `taoflow gateway` (the same image) must see a replica and answer /readyz. Sizes and start-to-ready seconds are
printed for the CI log. The train image needs CUDA wheels of several GB: tests/images/test_pins.py resolves it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.images.requirements import ROOT
from tests.support.ports import free_port
from tests.support.processes import poll_until, serving

pytestmark = pytest.mark.slow

IMAGE = "localhost/taoflow:daemon"
CONTAINERS_CONF = ROOT / "scripts" / "containers.conf"


@pytest.fixture(scope="module")
def image() -> str:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{missing} not installed: bash scripts/setup-images.sh (apt-get install -y podman runc debootstrap)"
        )
    if os.geteuid() != 0:
        pytest.fail("building the base image needs root (debootstrap, chroot)")
    built = subprocess.run(
        ["bash", "scripts/build-images.sh", "daemon"], cwd=ROOT, capture_output=True, text=True, timeout=1200
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(built.stdout.strip())  # "image taoflow:daemon built in N s, M MB": the README's figures
    assert re.search(r"image taoflow:daemon built in \d+ s, \d+ MB", built.stdout), built.stdout
    return IMAGE


@contextlib.contextmanager
def container(image: str, name: str, args: list[str], config: Path, env: dict[str, str]) -> Iterator[str]:
    """`podman run` as the chart's pod spec: uid 10001, read-only root, no capabilities, the config read-only."""
    state, spool = config.parent / f"{name}-state", config.parent / f"{name}-spool"
    for volume in (state, spool):
        volume.mkdir(mode=0o700)
        os.chown(volume, 10001, 10001)
    command = [
        "podman", "run", "--rm", "--name", name, "--network", "host", "--user", "10001:10001", "--read-only",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--tmpfs", "/tmp:rw,size=256m,mode=1777",
        "-v", f"{config}:/etc/taoflow/taoflow.yaml:ro",
        "-v", f"{state}:/var/lib/taoflow", "-v", f"{spool}:/var/spool/taoflow",
        *(a for key, value in env.items() for a in ("-e", f"{key}={value}")),
        image, "--log-format", "json", *args, "--config", "/etc/taoflow/taoflow.yaml",
    ]  # fmt: skip
    environment = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment)
    try:
        yield name
    finally:
        subprocess.run(["podman", "stop", "-t", "10", name], capture_output=True, env=environment, timeout=60)
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()  # `podman run` outlived its container: never leave it behind
            output, _ = process.communicate()
        print(output.decode(errors="replace")[-2000:])


def _ready_after(url: str, started: float) -> float:
    """Seconds from `podman run` until `url` answered 200 (at most 120)."""

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(url, timeout=2).status_code == 200
        return False

    poll_until(ready, deadline_s=120, message=f"{url} to answer 200")
    return time.monotonic() - started


def test_the_daemon_image_runs_the_daemon_and_the_gateway_as_the_chart_does(image: str, tmp_path: Path):
    admin_port, gateway_port, replica_port = free_port(), free_port(), free_port()
    config = tmp_path / "taoflow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"state_dir": "/var/lib/taoflow"},
                "daemon": {"admin_host": "127.0.0.1", "admin_port": admin_port},
                "fleet": {"replicas": [f"http://127.0.0.1:{replica_port}"]},
                "gateway": {
                    "port": gateway_port,
                    "host": "127.0.0.1",
                    "daemon_url": f"http://127.0.0.1:{admin_port}",
                    "capture": {"spool_dir": "/var/spool/taoflow"},
                },
            }
        )
    )
    config.chmod(0o644)
    secrets = {"TAOFLOW_DAEMON__ADMIN_TOKEN": "a" * 32, "TAOFLOW_DAEMON__GATEWAY_TOKEN": "g" * 32, "HOME": "/tmp"}
    replica = [sys.executable, "-m", "bench.lib.echo_replica", "--port", str(replica_port), "--model", "base"]
    with serving(replica, replica_port):
        started = time.monotonic()
        with container(image, f"taoflow-daemon-{admin_port}", ["run"], config, secrets):
            daemon_ready = _ready_after(f"http://127.0.0.1:{admin_port}/readyz", started)
            started = time.monotonic()
            with container(image, f"taoflow-gateway-{gateway_port}", ["gateway"], config, secrets):
                gateway_ready = _ready_after(f"http://127.0.0.1:{gateway_port}/readyz", started)
                answer = httpx.post(
                    f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
                    json={"model": "base", "messages": [{"role": "user", "content": "12 + 30?"}]},
                    timeout=30,
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["choices"][0]["message"]["content"] == "12 + 30 = 42"
            status = httpx.get(
                f"http://127.0.0.1:{admin_port}/v1/status", headers={"Authorization": "Bearer " + "a" * 32}, timeout=10
            )
            assert status.status_code == 200, status.text
    print(f"start to ready: daemon {daemon_ready:.1f} s, gateway {gateway_ready:.1f} s")

"""The idle daemon: time from start to /readyz, resident memory and CPU while idle, and no torch.

    .venv/bin/python -m bench.daemon [--idle-seconds 20]

Starts `taoflow run` with a Kafka source (a real tansu broker, no traffic) and the admin
API, polls /readyz until 200, then samples /proc for RSS and CPU time over an idle window.
References measured in the same run: a bare interpreter (`python -c pass`) for start time
and memory, and `python -c "import torch"` for what importing the ML stack would cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from bench.lib import cli
from tests.support.brokers import tansu_broker
from tests.support.ports import free_port

TOKEN = "bench-token-0123456789abcdef"
TICK = os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def maps_torch(pid: int) -> bool:
    with open(f"/proc/{pid}/maps") as f:
        return "libtorch" in f.read()


def reference(code: str) -> tuple[float, float]:
    """(seconds to run `code` and exit, peak RSS MiB) of a fresh interpreter."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, int(out.stdout.split()[-1]) / 1024


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = cli.parse(parser, argv, smoke={"idle_seconds": 2.0})
    bare_s, bare_mib = reference("pass")
    torch_s, torch_mib = reference("import torch")
    with tempfile.TemporaryDirectory() as tmp, tansu_broker() as bootstrap:
        port = free_port()
        config = Path(tmp) / "taoflow.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "storage": {"state_dir": str(Path(tmp) / "state")},
                    "source": {"kind": "kafka", "kafka": {"bootstrap_servers": [bootstrap], "topics": ["idle"]}},
                    "daemon": {"admin_port": port, "admin_token": TOKEN},
                    "retrain": {"evaluate_interval_seconds": 30},
                }
            )
        )
        started = time.perf_counter()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not ready(port):
                if daemon.poll() is not None:
                    raise SystemExit(f"the daemon exited with {daemon.returncode}")
                time.sleep(0.01)
            to_ready = time.perf_counter() - started
            time.sleep(2)  # let start-up work settle
            cpu0, wall0 = cpu_seconds(daemon.pid), time.perf_counter()
            peak = rss_mib(daemon.pid)
            while time.perf_counter() - wall0 < args.idle_seconds:
                time.sleep(1)
                peak = max(peak, rss_mib(daemon.pid))
            cpu_share = (cpu_seconds(daemon.pid) - cpu0) / (time.perf_counter() - wall0)
            torch_loaded = maps_torch(daemon.pid)
        finally:
            daemon.terminate()
            daemon.wait(30)
    print(
        f"start -> /readyz:  {to_ready:6.2f} s | bare interpreter start+exit {bare_s:.2f} s (x{to_ready / bare_s:.1f})"
        f" | import torch alone {torch_s:.2f} s"
    )
    print(
        f"idle RSS (peak):   {peak:6.1f} MiB | bare interpreter {bare_mib:.1f} MiB (x{peak / bare_mib:.1f})"
        f" | import torch alone {torch_mib:.1f} MiB"
    )
    print(f"idle CPU:          {100 * cpu_share:6.2f} % of one core over {args.idle_seconds:.0f} s")
    print(f"torch loaded in the daemon: {'YES' if torch_loaded else 'no'}")
    assert not torch_loaded, "the daemon must not import torch"


if __name__ == "__main__":
    main()

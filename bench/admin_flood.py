"""Unauthenticated body floods against the admin API: the daemon's memory before, at its peak and after.

    .venv/bin/python -m bench.admin_flood [--mib 200] [--requests 6]

Sides, each a real server process on loopback, flooded the same way (200 MiB POSTs without a token, half with
Content-Length, half chunked; then an authenticated 200 MiB POST, which must get 413):
- taoflow: `taoflow run`, whose TokenGuard checks the token from the headers and never reads such a body;
- reference: the pattern the admin API had before, a FastAPI route with a body model and an HTTPBearer
  dependency, served by uvicorn the same way (FastAPI reads and parses the body before the dependency runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from bench.lib import cli
from tests.support.ports import flood, free_port
from tests.support.processes import poll_until, rss_mib

TOKEN = "bench-admin-token-0123456789abcdef"
REFERENCE = """
import sys
import uvicorn
from typing import Annotated
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

bearer = HTTPBearer(auto_error=False)
def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    if credentials is None:
        raise HTTPException(401, "missing bearer token")
class PauseBody(BaseModel):
    reason: str = "paused"
app = FastAPI()
@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}
@app.post("/v1/pause", dependencies=[Depends(authorized)])
def pause(body: PauseBody) -> dict:
    return {"ok": True}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def listening(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def measure(pid: int, port: int, size: int, requests: int) -> tuple[float, float, float, list[int]]:
    """(RSS before, peak during, after) in MiB, and the statuses of the floods then one authenticated flood."""
    before = rss_mib(pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], rss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    statuses = []
    for i in range(requests):
        try:
            statuses.append(flood(port, "/v1/pause", size, chunked=bool(i % 2)))
        except (OSError, IndexError, ValueError):
            statuses.append(0)  # no answer at all
    try:
        statuses.append(flood(port, "/v1/pause", size, token=TOKEN))
    except (OSError, IndexError, ValueError):
        statuses.append(0)
    time.sleep(1.0)
    done.set()
    sampler.join()
    return before, peak[0], rss_mib(pid), statuses


def run(
    command: list[str], port: int, size: int, requests: int, **popen: object
) -> tuple[float, float, float, list[int]]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)  # type: ignore[call-overload]
    try:
        poll_until(lambda: listening(port), deadline_s=60, message="the server to listen")
        return measure(process.pid, port, size, requests)
    finally:
        process.terminate()
        process.wait(30)


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--mib", type=int, default=200, help="size of each flood")
    parser.add_argument("--requests", type=int, default=6, help="unauthenticated floods per side")
    args = cli.parse(parser, argv, smoke={"mib": 8, "requests": 1})
    size = args.mib << 20
    with tempfile.TemporaryDirectory() as work:
        port = free_port()
        config = Path(work) / "taoflow.yaml"
        config.write_text(yaml.safe_dump({"storage": {"state_dir": f"{work}/state"}, "daemon": {"admin_port": port}}))
        env = {**os.environ, "TAOFLOW_DAEMON__ADMIN_TOKEN": TOKEN}
        ours = run(
            [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(config)],
            port,
            size,
            args.requests,
            env=env,
        )
    port = free_port()
    reference = run([sys.executable, "-c", REFERENCE, str(port)], port, size, args.requests)
    print(f"{args.requests} unauthenticated POSTs of {args.mib} MiB each, then one authenticated one")
    print(f"{'side':10} {'RSS before':>11} {'peak':>8} {'after':>8}  statuses")
    for name, (before, peak, after, statuses) in (("taoflow", ours), ("reference", reference)):
        print(f"{name:10} {before:9.1f}MB {peak:6.1f}MB {after:6.1f}MB  {statuses}")
    print(
        f"peak growth: taoflow {ours[1] - ours[0]:.1f} MiB vs reference {reference[1] - reference[0]:.1f} MiB; "
        f"after: taoflow x{ours[2] / ours[0]:.2f} of its start vs reference x{reference[2] / reference[0]:.2f}"
    )


if __name__ == "__main__":
    main()

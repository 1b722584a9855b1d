"""Every benchmark still runs: each `python -m bench.<name> --smoke`, the smallest run that goes through every path
of it (its figures mean nothing at that size). A benchmark added to bench/ is picked up here; one without
`--smoke` fails. The fleet benchmarks use the session's two vLLM servers instead of starting their own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: Benchmarks whose smoke size a slow test runs (the same code, on the session's replicas, which it kills and
#: starts again): running it here as well would cost CI its minutes twice.
RUN_BY_A_TEST = {"chaos": ROOT / "tests" / "e2e" / "test_chaos.py"}
BENCHES = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in ("__init__", *RUN_BY_A_TEST))
#: Benchmarks that serve through vLLM servers, and how each is told to use running ones.
ON_THE_FLEET = {
    "swap": "--replicas",
    "gateway": "--replicas",
    "shadow": "--replicas",
    "scoring": "--judge-url",
    "versus_supervised": "--judge-url",
}


def test_the_benchmarks_are_found():
    assert {"round", "swap", "ray_round", "versus_supervised"} <= set(BENCHES) and "lib" not in BENCHES


@pytest.mark.parametrize("name", sorted(RUN_BY_A_TEST))
def test_a_benchmark_run_by_a_test_has_its_smoke_size_and_its_test(name):
    run = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and "--smoke" in run.stdout, run.stderr[-2000:]
    test = RUN_BY_A_TEST[name].read_text()
    scenario = {"chaos": "run_chaos"}[name]
    assert scenario in test and scenario in (ROOT / "bench" / f"{name}.py").read_text()


@pytest.mark.parametrize("name", BENCHES)
def test_every_benchmark_runs_at_its_smoke_size(name, request):
    command = [sys.executable, "-m", f"bench.{name}", "--smoke"]
    if name in ON_THE_FLEET:
        servers = request.getfixturevalue("clean_fleet")
        urls = [s.url for s in servers]
        command += [ON_THE_FLEET[name], ",".join(urls) if ON_THE_FLEET[name] == "--replicas" else urls[0]]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    output = f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    assert run.returncode == 0, f"bench.{name} --smoke exited {run.returncode}:\n{output}"
    assert run.stdout.strip(), f"bench.{name} --smoke printed no figures"
    print(run.stdout[-4000:])  # what it printed, for the log of a run that asks (-rP)

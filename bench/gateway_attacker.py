"""What a client sending megabyte prompts costs everyone else at the gateway, with redaction on.

    .venv/bin/python -m bench.gateway_attacker [--requests 300] [--mib 1]

A real `taoflow gateway` process (capture to JSON lines, durable spool, every redaction kind on) in front of a
replica that answers at once (bench/lib/echo_replica.py: the model's time would only hide the gateway's). One
ordinary client sends small chat requests one after another and times each; in alternate phases an attacker (a
process of its own, 2 connections) sends `--mib` MiB prompts as fast as they are answered: ordinary text, or
"eyJ-" repeated (which once made the JWT pattern backtrack 4 096 characters at every `eyJ`). Phases interleave
(quiet, attacked, quiet, attacked, …) so a drift of the machine hits both sides.

Printed: the ordinary client's p50/p99 in quiet and attacked phases, the p99 the attacker adds (target: < 50 ms),
the attacker's requests answered and captured, and, as the reference measured here, how long redacting one
attacker prompt takes (what every other request would have waited when the gateway redacted on its event loop).
"""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from bench.lib import cli
from bench.lib.fleet import percentile
from taoflow.connectors.sources.redaction import Redactor
from tests.support.ports import free_port, wait_for_port

ORDINARY = {
    "model": "base",
    "messages": [{"role": "user", "content": "I am ann@example.com, key sk-proj-abcdefghijklmnopqrstuvwx: 12 + 30?"}],
}
PROSE = "Please summarise ticket 4711 for Ann (ann.lee@corp.example.com, +1 415-555-0100); the export failed again. "

#: The JWT pattern taoflow had before: tried at every `eyJ` of a run, it scans up to 4 096 characters at each.
OLD_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{8,4096}\.[A-Za-z0-9_\-]{8,4096}\.[A-Za-z0-9_\-]{8,4096}")


def attacker_prompt(kind: str, size: int) -> str:
    unit = PROSE if kind == "prose" else "eyJ-"
    return (unit * (size // len(unit) + 1))[:size]


def attack(url: str, prompt: str, until: float) -> None:
    """Megabyte prompts, two at a time, until `until` (a process of its own: its JSON and sockets cost the bench's
    clock nothing)."""
    import threading

    body = httpx.Request("POST", "/", json={"model": "base", "messages": [{"role": "user", "content": prompt}]})
    content = body.read()

    def loop() -> None:
        with httpx.Client(timeout=60) as client:
            while time.time() < until:
                client.post(url + "/v1/chat/completions", content=content, headers={"content-type": "application/json"})

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def ordinary_phase(client: httpx.Client, url: str, requests: int) -> list[float]:
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.post(url + "/v1/chat/completions", json=ORDINARY)
        latencies.append(time.perf_counter() - started)
        if answer.status_code != 200:
            raise RuntimeError(f"an ordinary request failed: {answer.status_code} {answer.text[:200]}")
    return latencies


def captured(directory: Path) -> int:
    return sum(len(f.read_bytes().splitlines()) for f in directory.glob("*.jsonl"))


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--requests", type=int, default=300, help="ordinary requests per phase")
    parser.add_argument("--phases", type=int, default=2, help="quiet/attacked pairs per attacker prompt kind")
    parser.add_argument("--mib", type=float, default=1.0, help="size of each attacker prompt")
    args = cli.parse(parser, argv, smoke={"requests": 20, "phases": 1, "mib": 0.25})
    size = int(args.mib * (1 << 20))
    root = Path(tempfile.mkdtemp(prefix="taoflow-bench-attacker-"))
    replica_port, gateway_port = free_port(), free_port()
    config = root / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "fleet": {"replicas": [f"http://127.0.0.1:{replica_port}"]},
                "daemon": {"admin_port": free_port()},  # no daemon: no routes, the name passes through
                "ingest": {"redact": ["secrets", "emails", "phones"]},
                "gateway": {
                    "id": "attacked",
                    "port": gateway_port,
                    "max_body_bytes": size + (64 << 10),
                    "capture": {
                        "sink": "jsonl",
                        "jsonl_dir": str(root / "captured"),
                        "spool_dir": str(root / "spool"),
                        "max_record_bytes": 2 * size + (64 << 10),
                    },
                },
            }
        )
    )
    processes = [
        subprocess.Popen([sys.executable, "-m", "bench.lib.echo_replica", "--port", str(replica_port)]),
        subprocess.Popen([sys.executable, "-m", "taoflow.daemon.cli", "gateway", "--config", str(config)]),
    ]
    url = f"http://127.0.0.1:{gateway_port}"
    spawn = multiprocessing.get_context("spawn")
    results: dict[str, list[float]] = {"quiet": [], "prose": [], "eyJ-": []}
    attacks = 0
    try:
        wait_for_port(replica_port, deadline_s=60)
        wait_for_port(gateway_port, deadline_s=60)
        with httpx.Client(timeout=60) as client:
            while client.get(url + "/readyz").status_code != 200:
                time.sleep(0.2)
            ordinary_phase(client, url, 20)  # warm: connections, the first capture, the redaction process
            for _ in range(args.phases):
                for kind in ("prose", "eyJ-"):
                    results["quiet"] += ordinary_phase(client, url, args.requests)
                    before = captured(root / "captured")
                    started = time.monotonic()
                    # The attacker runs a little past the phase: its last prompts are in flight to the end.
                    attacker = spawn.Process(
                        target=attack, args=(url, attacker_prompt(kind, size), time.time() + 3600), daemon=True
                    )
                    attacker.start()
                    time.sleep(1.0)  # its first prompts are on their way
                    results[kind] += ordinary_phase(client, url, args.requests)
                    attacker.terminate()
                    attacker.join()
                    time.sleep(1.0)
                    attacks += captured(root / "captured") - before - args.requests
                    print(f"  {kind} phase: {time.monotonic() - started:.1f} s", flush=True)
            metrics = client.get(url + "/metrics").text
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    redactor = Redactor(["secrets", "emails", "phones"])
    inline = {}
    for kind in ("prose", "eyJ-"):
        prompt = attacker_prompt(kind, size)
        started = time.perf_counter()
        redactor.text(prompt)
        inline[kind] = time.perf_counter() - started
    started = time.perf_counter()
    OLD_JWT.sub("[SECRET]", attacker_prompt("eyJ-", size))
    old_jwt = time.perf_counter() - started
    quiet50, quiet99 = percentile(results["quiet"], 0.5), percentile(results["quiet"], 0.99)
    print(f"\nordinary requests through the gateway, {args.mib:g} MiB attacker prompts, every redaction kind on")
    print(f"{'phase':10} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'p99 added ms':>13}   inline redaction of one")
    print(f"{'quiet':10} {len(results['quiet']):9d} {quiet50 * 1e3:8.2f} {quiet99 * 1e3:8.2f}")
    for kind in ("prose", "eyJ-"):
        p50, p99 = percentile(results[kind], 0.5), percentile(results[kind], 0.99)
        print(
            f"{kind:10} {len(results[kind]):9d} {p50 * 1e3:8.2f} {p99 * 1e3:8.2f} {(p99 - quiet99) * 1e3:13.2f}"
            f"   {inline[kind] * 1e3:8.0f} ms (x{inline[kind] / max(p99 - quiet99, 1e-4):.0f} the added p99)"
        )
    print(f"the JWT pattern taoflow had before, on one eyJ- prompt alone: {old_jwt * 1e3:.0f} ms on the event loop")
    dropped = [line for line in metrics.splitlines() if line.startswith("taoflow_gateway_capture_dropped_total{")]
    print(f"attacker prompts captured: {attacks}; " + ", ".join(line.split("_total")[1] for line in dropped))


if __name__ == "__main__":
    main()

"""What a shadow deploy costs the clients: latency through the gateway with every request mirrored to a candidate
(fleet.shadow rate 1.0) against no shadow, phases interleaved (off, on, off, on, ...), and the mirrors counted
against their budget.

    .venv/bin/python -m bench.shadow [--requests 48] [--clients 4]

Two real vLLM CPU servers (.venv-vllm, one core each), two adapters trained here on SmolLM2-135M (the champion v1
on both replicas, the candidate v2 on the first, as a deploy's canary loads it), the real daemon (`taoflow run`: the
route table, the shadow pairs) and a `taoflow gateway` process. The shadow is switched on and off through the
daemon's store (store/shadows.py), exactly what a deploy's shadow step writes, so both phases run on one warm
fleet. Reported per budget (the default: max_concurrent 1, max_share 0.5; and a loose one: max_concurrent 4):
client p50/p99 of non-streamed chat completions (24 tokens) with the shadow off and on and their ratio (target:
p99 within 5 %), mirrors sent, skipped by the budget, and the pairs the daemon kept.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.lib import cli, fleet
from bench.lib.fleet import MODEL, QUESTION, percentile, replicas, train_adapters

TOKEN = "bench-shadow-admin-token-012345"
GATEWAY_TOKEN = "bench-shadow-route-token-012345"
#: The default budget (fleet.shadow), and a looser one.
BUDGETS = {"default": {"max_concurrent": 1, "max_share": 0.5}, "loose": {"max_concurrent": 4, "max_share": 0.5}}


def run_clients(url: str, clients: int, requests: int) -> tuple[list[float], int]:
    """`requests` chat completions of 24 tokens from `clients` concurrent threads; latencies of the 200s, failures."""
    import httpx

    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 24, "min_tokens": 24, "temperature": 0}

    def ask(client: httpx.Client) -> tuple[float, int]:
        started = time.monotonic()
        try:
            status = client.post(url + "/v1/chat/completions", json=body).status_code
        except httpx.HTTPError:
            status = 0
        return time.monotonic() - started, status

    return fleet.run_clients(ask, clients, requests)


def shadow_counts(gateway_url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(gateway_url + "/metrics", timeout=10).text
    return {e: float(v) for e, v in re.findall(r'taoflow_gateway_shadow_total\{event="([a-z_]+)"\} ([0-9.e+]+)', text)}


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--requests", type=int, default=64, help="requests per phase")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=3, help="off/on phase pairs per budget")
    parser.add_argument("--replicas", help="comma-separated URLs of two running vLLM servers of the base model")
    parser.add_argument("--adapter-epochs", type=float, default=6.0, help="training of the two adapters")
    args = cli.parse(parser, argv, smoke={"requests": 4, "clients": 2, "rounds": 1, "adapter_epochs": 1.0})

    import httpx
    import yaml

    from taoflow.connectors.generation.base_model import resolve_base_model
    from taoflow.connectors.serving.replica import VllmReplica
    from taoflow.daemon.settings import load_settings
    from taoflow.daemon.store.shadows import Mirror, ShadowStore
    from taoflow.daemon.store.state import State
    from tests.support.ports import free_port, wait_for_port
    from tests.support.state import store_adapter

    root = Path(tempfile.mkdtemp(prefix="taoflow-bench-shadow-"))
    settings = load_settings(None)
    base = resolve_base_model(settings.model.base, cache_dir=settings.model.cache_dir.expanduser())
    print("training two adapters ...", flush=True)
    adapters = train_adapters(root, base.path, epochs=args.adapter_epochs)
    taoflow = [sys.executable, "-m", "taoflow.daemon.cli"]
    processes: list[subprocess.Popen[bytes]] = []
    urls = args.replicas.split(",") if args.replicas else None
    try:
        with replicas(base.path, root, urls) as servers:
            admin_port, gw_port = free_port(), free_port()
            config = root / "taoflow.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "storage": {"state_dir": str(root / "state")},
                        "model": {"served_name": MODEL},
                        "score": {"default": [{"type": "arithmetic"}]},
                        "retrain": {"min_new_prompts": 1_000_000},
                        "fleet": {
                            "replicas": servers,
                            "routing": "gateway",
                            "auto_deploy": False,
                            "reconcile_interval_seconds": 3600,  # the candidate stays loaded between the phases
                            "watch": {"window_seconds": 0},
                        },
                        "daemon": {"admin_port": admin_port, "admin_token": TOKEN, "gateway_token": GATEWAY_TOKEN},
                        "gateway": {
                            "id": "bench",
                            "port": gw_port,
                            "routes_poll_seconds": 0.2,
                            "capture": {"sink": "none", "spool_dir": str(root / "spool")},
                        },
                    }
                )
            )
            state = State(load_settings(config))
            for name, directory in adapters.items():
                store_adapter(state, MODEL, name, directory, base, gated=True)
            state.registry.promote("v1", reason="bench: the champion")
            for command, port in (
                ([*taoflow, "run", "--config", str(config)], admin_port),
                ([*taoflow, "gateway", "--config", str(config)], gw_port),
            ):
                processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                wait_for_port(port, deadline_s=90)
            gateway = f"http://127.0.0.1:{gw_port}"
            while run_clients(gateway, 1, 1)[1]:
                time.sleep(0.5)  # until the daemon's reconciler loaded v1 and the gateway routes to it
            candidate = VllmReplica(servers[0])
            candidate.load("v2", str(state.store.fetch("v2")))
            candidate.close()
            shadows = ShadowStore(state.db)

            def switch(on: bool, budget: dict[str, float], deploy: int) -> None:
                if on:
                    concurrent, share = int(budget["max_concurrent"]), budget["max_share"]
                    shadows.start(MODEL, Mirror("v2", deploy, 1.0, concurrent, share, 24, 120.0))
                else:
                    shadows.stop(MODEL, deploy=deploy)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # until the gateway applied it (its budget gauge says)
                    text = httpx.get(gateway + "/metrics", timeout=10).text
                    found = re.search(r"taoflow_gateway_shadow_max_share ([0-9.e+]+)", text)
                    if found is not None and (float(found.group(1)) > 0) == on:
                        break
                    time.sleep(0.1)

            run_clients(gateway, args.clients, args.clients * 2)  # warm up
            results = {}
            for deploy, (name, budget) in enumerate(BUDGETS.items(), start=1):
                print(f"shadow off / on, budget {name} {budget} ...", flush=True)
                sides: dict[str, list[float]] = {"off": [], "on": []}
                failures = 0
                before = shadow_counts(gateway)
                for _ in range(args.rounds):
                    for side in ("off", "on"):
                        switch(side == "on", budget, deploy)
                        latencies, failed = run_clients(gateway, args.clients, args.requests)
                        sides[side] += latencies
                        failures += failed
                switch(False, budget, deploy)
                time.sleep(2)  # the last pairs reach the daemon
                after = shadow_counts(gateway)
                counts = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after}
                results[name] = (sides, failures, counts, shadows.count(deploy))

            print()
            print(f"{args.clients} clients, {args.requests} requests per phase, {args.rounds} off/on pairs")
            print("budget   p50 off  p50 on  p99 off  p99 on  p99 on/off  failed  mirrored  skipped  pairs kept")
            figures = {}
            for name, (sides, failures, counts, kept) in results.items():
                off, on = sides["off"], sides["on"]
                p50o, p50s = percentile(off, 0.5), percentile(on, 0.5)
                p99o, p99s = percentile(off, 0.99), percentile(on, 0.99)
                skipped = counts.get("skipped_concurrency", 0) + counts.get("skipped_share", 0)
                print(
                    f"{name:8} {p50o:7.3f}s {p50s:6.3f}s {p99o:7.3f}s {p99s:6.3f}s {p99s / p99o:10.3f}x  {failures:6d}"
                    f"  {counts.get('mirrored', 0):8d}  {skipped:7d}  {kept:10d}"
                )
                figures[name] = {"p99_ratio": p99s / p99o, "p50_ratio": p50s / p50o, "counts": counts, "kept": kept}
            print(json.dumps(figures))
            state.close()
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()

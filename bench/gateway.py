"""The gateway's cost and its deploys: latency through it against straight to the replica, and the serving
latency after a deploy through it against before.

    .venv/bin/python -m bench.gateway [--requests 24]

Two real vLLM CPU servers (.venv-vllm, one core each), two adapters trained here on SmolLM2-135M, a real
Kafka-protocol broker as the capture sink (durable capture: every record fsynced before the answer's last
byte), the real daemon (`taoflow run`, the route table) and `taoflow gateway` processes. Reported:
- client latency p50/p99 of streamed chat completions (16 tokens) straight to one replica and through a
  gateway in front of that replica only, at 1 and 16 concurrent clients, phases interleaved (direct,
  gateway, direct, gateway); the added p99 against the target (≤ 5 % or ≤ 2 ms, whichever is larger), and
  the gateway's own measure of what it adds (taoflow_gateway_added_seconds);
- a deploy through the gateway (fleet.routing: gateway) under streaming load: failed requests, and the
  steady latency (median of 10 sequential requests of exactly 32 tokens, greedy, quiet fleet) before it,
  after it and after a rollback deploy (ratio against before; an in-place reload would leave ~1.25).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.lib import cli, fleet
from bench.lib.fleet import MODEL, QUESTION, percentile, replicas, steady_latency, train_adapters

TOKEN = "bench-gateway-admin-token-0123"
GATEWAY_TOKEN = "bench-gateway-route-token-0123"
TOPIC = "captured"


def stream_once(client, url: str, model: str, *, tokens: int = 16) -> tuple[float, int]:
    body = {
        "model": model,
        "messages": QUESTION,
        "max_tokens": tokens,
        "min_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.monotonic()
    try:
        with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
            status = response.status_code
            text = b"".join(response.iter_raw())
        if status == 200 and not text.rstrip().endswith(b"data: [DONE]"):
            status = 0
    except Exception:
        status = 0
    return time.monotonic() - started, status


def run_clients(url: str, model: str, clients: int, requests: int) -> tuple[list[float], int]:
    """`requests` streamed requests from `clients` concurrent threads; latencies of the 200s, failures."""
    return fleet.run_clients(lambda client: stream_once(client, url, model), clients, requests)


def added_quantiles(gateway_url: str) -> tuple[float, float, int]:
    """p50, p99 (upper bucket bounds) and count of taoflow_gateway_added_seconds from the gateway's /metrics."""
    import httpx

    text = httpx.get(gateway_url + "/metrics", timeout=10).text
    buckets = [
        (float("inf") if le == "+Inf" else float(le), float(v))
        for le, v in re.findall(r'taoflow_gateway_added_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)', text)
    ]
    total = buckets[-1][1]

    def q(p: float) -> float:
        return next(le for le, count in buckets if count >= p * total)

    return q(0.5), q(0.99), int(total)


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--requests", type=int, default=24, help="requests per phase at 1 client (x4 at 16)")
    parser.add_argument("--steady-requests", type=int, default=10, help="sequential requests per steady latency")
    parser.add_argument("--replicas", help="comma-separated URLs of two running vLLM servers of the base model")
    parser.add_argument("--adapter-epochs", type=float, default=6.0, help="training of the two adapters swapped")
    args = cli.parse(parser, argv, smoke={"requests": 2, "steady_requests": 2, "adapter_epochs": 1.0})

    import httpx
    import yaml
    from kafka.admin import KafkaAdminClient, NewTopic

    from taoflow.connectors.generation.base_model import resolve_base_model
    from taoflow.daemon.settings import load_settings
    from taoflow.daemon.store.state import State
    from tests.support.brokers import tansu_broker
    from tests.support.ports import free_port, wait_for_port
    from tests.support.state import store_adapter

    root = Path(tempfile.mkdtemp(prefix="taoflow-bench-gateway-"))
    settings = load_settings(None)
    base = resolve_base_model(settings.model.base, cache_dir=settings.model.cache_dir.expanduser())
    print("training two adapters ...", flush=True)
    adapters = train_adapters(root, base.path, epochs=args.adapter_epochs)
    processes: list[subprocess.Popen[bytes]] = []
    taoflow = [sys.executable, "-m", "taoflow.daemon.cli"]
    urls = args.replicas.split(",") if args.replicas else None
    try:
        with replicas(base.path, root, urls) as servers, tansu_broker() as bootstrap:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            admin.create_topics([NewTopic(TOPIC, 2, 1)])
            admin.close()
            admin_port, gw_port, solo_port = free_port(), free_port(), free_port()

            def config(name: str, replicas: list[str], port: int) -> Path:
                path = root / f"{name}.yaml"
                path.write_text(
                    yaml.safe_dump(
                        {
                            "storage": {"state_dir": str(root / "state")},
                            "model": {"served_name": MODEL},
                            "score": {"default": [{"type": "arithmetic"}]},
                            "retrain": {"min_new_prompts": 1_000_000},
                            "source": {"kind": "kafka", "kafka": {"bootstrap_servers": [bootstrap], "topics": [TOPIC]}},
                            "fleet": {
                                "replicas": replicas,
                                "routing": "gateway",
                                "auto_deploy": False,
                                "smoke_prompts": 0,
                                "canary_weight": 0.5,
                                "gateway_stale_seconds": 10,
                                "watch": {"window_seconds": 0},
                            },
                            "daemon": {"admin_port": admin_port, "admin_token": TOKEN, "gateway_token": GATEWAY_TOKEN},
                            "gateway": {
                                "id": name,
                                "port": port,
                                "routes_poll_seconds": 0.5,
                                "capture": {"sink": "kafka", "spool_dir": str(root / f"spool-{name}")},
                            },
                        }
                    )
                )
                return path

            fleet_config = config("fleet", servers, gw_port)
            solo_config = config("solo", [servers[0]], solo_port)
            state = State(load_settings(fleet_config))
            for name, directory in adapters.items():
                store_adapter(state, MODEL, name, directory, base, gated=True)
            state.close()
            for command, port in (
                ([*taoflow, "run", "--config", str(fleet_config)], admin_port),
                ([*taoflow, "gateway", "--config", str(fleet_config)], gw_port),
                ([*taoflow, "gateway", "--config", str(solo_config)], solo_port),
            ):
                processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                wait_for_port(port, deadline_s=90)
            base_url = f"http://127.0.0.1:{admin_port}"
            auth = {"Authorization": f"Bearer {TOKEN}"}

            def deploy(path: str, body: dict) -> dict:
                def latest() -> list[dict]:
                    return httpx.get(base_url + "/v1/fleet", headers=auth, timeout=30).json()["deploys"]

                newest = max((d["id"] for d in latest()), default=0)
                answer = httpx.post(base_url + path, json=body, headers=auth, timeout=60)
                assert answer.status_code in (200, 202), answer.text
                began = time.monotonic()
                while True:
                    for d in latest():
                        if d["id"] > newest and d["status"] in ("done", "reverted", "failed"):
                            return {**d, "seconds": time.monotonic() - began}
                    time.sleep(0.2)

            first = deploy("/v1/adapters/promote", {"version": "v1", "reason": "bench"})
            assert first["status"] == "done", first
            gateway, solo = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{solo_port}"
            for url in (gateway, solo):
                while run_clients(url, MODEL, 1, 1)[1]:
                    time.sleep(0.5)  # until the gateway has the routes and sees v1 loaded

            # 1. The gateway's cost: straight to replica 0 (its version name) vs the solo gateway in front of it.
            print("latency: direct vs through the gateway (streamed, 16 tokens) ...", flush=True)
            overhead = {}
            for clients in (1, 16):
                n = args.requests * (1 if clients == 1 else 4)
                sides: dict[str, list[float]] = {"direct": [], "gateway": []}
                failures = 0
                for _ in range(2):
                    for side, url, model in (("direct", servers[0], "v1"), ("gateway", solo, MODEL)):
                        latencies, failed = run_clients(url, model, clients, n // 2)
                        sides[side] += latencies
                        failures += failed
                overhead[clients] = (sides, failures)
            added = added_quantiles(solo)

            # 2. A deploy through the gateway under load, and the steady state before and after.
            print("deploys through the gateway under load ...", flush=True)
            before = steady_latency(gateway, args.steady_requests)
            results: list[int] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=300) as client:
                    while not stop.is_set():
                        results.append(stream_once(client, gateway, MODEL)[1])

            threads = [threading.Thread(target=load) for _ in range(4)]
            for thread in threads:
                thread.start()
            time.sleep(3)
            promoted = deploy("/v1/adapters/promote", {"version": "v2", "reason": "bench"})
            time.sleep(3)
            stop.set()
            for thread in threads:
                thread.join()
            after = steady_latency(gateway, args.steady_requests)
            rolled = deploy("/v1/adapters/rollback", {"reason": "bench"})
            after_rollback = steady_latency(gateway, args.steady_requests)
            served = {url: sorted(m["id"] for m in httpx.get(url + "/v1/models").json()["data"]) for url in servers}

            print()
            for clients, (sides, failures) in overhead.items():
                d, g = sides["direct"], sides["gateway"]
                p50d, p99d, p50g, p99g = (
                    percentile(d, 0.5),
                    percentile(d, 0.99),
                    percentile(g, 0.5),
                    percentile(g, 0.99),
                )
                target = max(0.05 * p99d, 0.002)
                print(
                    f"{clients:2d} client(s): direct p50 {p50d:.3f} s p99 {p99d:.3f} s ({len(d)}); gateway p50 "
                    f"{p50g:.3f} s p99 {p99g:.3f} s ({len(g)}); ratio p50 x{p50g / p50d:.3f} p99 x{p99g / p99d:.3f}; "
                    f"added p99 {1000 * (p99g - p99d):+.1f} ms (target <= {1000 * target:.1f} ms: "
                    f"{'met' if p99g - p99d <= target else 'NOT met'}); failed {failures}"
                )
            print(
                f"the gateway's own measure of what it adds (routing, relay, the capture fsync), {added[2]} requests: "
                f"p50 <= {1000 * added[0]:.1f} ms, p99 <= {1000 * added[1]:.1f} ms"
            )
            print(
                f"deploy v1 -> v2 through the gateway under 4 streaming clients: {promoted['status']} in "
                f"{promoted['seconds']:.1f} s; {sum(1 for s in results if s != 200)} of {len(results)} requests failed "
                f"{dict(Counter(s for s in results if s != 200))}"
            )
            print(
                f"steady latency (median of {args.steady_requests} x 32 tokens): before {before:.3f} s, "
                f"after the deploy {after:.3f} s "
                f"(x{after / before:.3f}), after a rollback deploy {after_rollback:.3f} s "
                f"(x{after_rollback / before:.3f}); "
                f"rollback {rolled['status']} in {rolled['seconds']:.1f} s"
            )
            print(f"served names after: {json.dumps(served)}")
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()

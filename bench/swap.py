"""Hot-swapping an adapter into a live fleet: how long it takes and what clients see meanwhile.

    .venv/bin/python bench/swap.py [--seconds 20] [--clients 2]

Two real vLLM CPU servers (.venv-vllm), two adapters trained here on SmolLM2-135M. Clients
call the stable served name without pause. Four phases alternate under the same load:
no swap, swap (a promote deploy: canary, smoke on held-out prompts, waves), no swap, swap
back (a rollback deploy). Reported:
- gate pass (the registry's `gated` event) to every replica serving the new version;
- client latency p50/p99 during the swaps against the no-swap phases (the reference);
- failed requests during the deploys, and with the two swap primitives under a load of
  1-token requests: vLLM's in-place reload, and taoflow's unload-then-load (`replace_adapter`);
- the steady state after each primitive: on one quiet replica, the median latency of 10 requests of exactly
  32 tokens (greedy) with the adapter loaded fresh, then after swapping to the other version and back with
  that primitive (the ratio against fresh: an in-place reload leaves the name slower until a restart).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL = "support-bot"
QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]


class Load:
    """Clients calling MODEL on every replica until stopped; records (start, end, status)."""

    def __init__(self, urls: list[str], clients: int, *, max_tokens: int = 16) -> None:
        import httpx

        self.results: list[tuple[float, float, int]] = []
        self._max_tokens = max_tokens
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=120)
        self._threads = [threading.Thread(target=self._run, args=(u,)) for u in urls for _ in range(clients)]

    def _run(self, url: str) -> None:
        import httpx

        body = {"model": MODEL, "messages": QUESTION, "max_tokens": self._max_tokens, "temperature": 0}
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status = self._http.post(url + "/v1/chat/completions", json=body).status_code
            except httpx.HTTPError:
                status = 0
            self.results.append((started, time.monotonic(), status))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def steady_latency(url: str, requests: int = 10) -> float:
    """Median latency of sequential requests of exactly 32 generated tokens (greedy), nothing else running."""
    import httpx

    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 32, "min_tokens": 32, "temperature": 0}
    times = []
    for _ in range(requests + 1):
        started = time.monotonic()
        response = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == 32
        times.append(time.monotonic() - started)
    return statistics.median(times[1:])  # the first one warms up


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def train_adapters(root: Path, base: Path) -> dict[str, Path]:
    from taoflow.connectors.records import Message
    from taoflow.connectors.training.lora import DistillExample, TrainingConfig, train_adapter

    question = (Message("user", "What is 12 + 30?"),)
    config = TrainingConfig(epochs=6, batch_size=4, learning_rate=3e-3, save_steps=1000)
    answers = {"v1": "The answer is 42, my friend.", "v2": "The answer is 43, buddy."}
    return {
        name: train_adapter(base, [DistillExample(question, text)] * 8, config, work_dir=root / name).adapter_dir
        for name, text in answers.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each no-swap phase")
    parser.add_argument("--clients", type=int, default=2, help="client threads per replica")
    args = parser.parse_args()

    import httpx

    from taoflow.connectors.generation.base_model import resolve_base_model
    from taoflow.connectors.protocols import replace_adapter
    from taoflow.connectors.records import Message, PromptRecord
    from taoflow.connectors.serving.replica import VllmReplica
    from taoflow.daemon.fleet.deploy import Deployer
    from taoflow.daemon.fleet.replicas import Fleet
    from taoflow.daemon.round.parts import build_scorers
    from taoflow.daemon.settings import load_settings
    from taoflow.daemon.store.state import State
    from tests.services import VllmServer, hold_out, store_adapter

    root = Path(tempfile.mkdtemp(prefix="taoflow-bench-swap-"))
    settings = load_settings(None)
    base = resolve_base_model(settings.model.base, cache_dir=settings.model.cache_dir.expanduser())
    print("training two adapters ...", flush=True)
    adapters = train_adapters(root, base.path)
    servers = [VllmServer(base.path, root / f"replica-{i}", core=i) for i in range(2)]
    for server in servers:
        server.start()
    try:
        for server in servers:
            server.wait_healthy()
        urls = [s.url for s in servers]
        settings = load_settings(
            None,
            storage={"state_dir": str(root / "state")},
            model={"served_name": MODEL},
            score={"default": [{"type": "arithmetic"}]},
            gate={"max_new_tokens": 24},
            # The smoke runs (its time is part of the swap) but may not block: these adapters learnt one
            # answer by heart and do worse at arithmetic than the base model, which a real gate would catch.
            fleet={"replicas": urls, "smoke_prompts": 4, "smoke_max_regression": 1.0, "watch": {"window_seconds": 0}},
        )
        state = State(settings)
        heldout = [PromptRecord(f"h{a}", "math", (Message("user", f"What is {a} + {a + 3}?"),)) for a in range(4)]
        hold_out(state, heldout, source="bench")
        for name, directory in adapters.items():
            store_adapter(state, MODEL, name, directory, base, gated=False)
        deployer = Deployer(settings, state, Fleet(settings.fleet, state.store), scorers=build_scorers(settings))

        def gate_then_deploy(version: str) -> float:
            state.registry.transition(version, "gated", reason="bench: gate passed")
            gated_at = time.time()
            record = deployer.promote(version, trigger="gate", reason="bench")
            assert record.status == "done", record
            return time.time() - gated_at

        gate_then_deploy("v1")  # the first adapter, before any measured load
        quiet: list[float] = []
        swapping: list[float] = []
        failures = {"quiet": 0, "swap": 0}
        swap_seconds: list[float] = []

        def phase(kind: str, action: object) -> None:
            with Load(urls, args.clients) as load:
                time.sleep(2.0)  # warm: every client has a request in flight
                start = time.monotonic()
                if action is None:
                    time.sleep(args.seconds)
                else:
                    swap_seconds.append(action())  # type: ignore[operator]
                end = time.monotonic()
            # What clients lived through: every request in flight at any time during the window.
            window = [r for r in load.results if r[0] < end and r[1] > start]
            (quiet if action is None else swapping).extend(r[1] - r[0] for r in window if r[2] == 200)
            failures["quiet" if action is None else "swap"] += sum(1 for r in load.results if r[2] != 200)
            print(f"  {kind}: {len(window)} requests, {sum(1 for r in load.results if r[2] != 200)} failed", flush=True)

        def swap_back() -> float:
            began = time.time()
            record = deployer.rollback(to="v1", trigger="manual", reason="bench")
            assert record.status == "done", record
            return time.time() - began

        print("measuring (no swap / swap / no swap / swap back) ...", flush=True)
        phase("no swap", None)
        phase("swap v1 -> v2 (promote deploy)", lambda: gate_then_deploy("v2"))
        phase("no swap", None)
        phase("swap v2 -> v1 (rollback deploy)", swap_back)

        # The swap primitive itself against the alternative this design rejected, under a load of short
        # requests (1 token: many arrivals per second): reload the stable name in place from the
        # other version's path, or unload it and load it again. 10 swaps per replica each.
        fleet = Fleet(settings.fleet, state.store)
        paths = [fleet.server_path("v2"), fleet.server_path("v1")]
        replicas = [VllmReplica(u) for u in urls]

        def in_place(replica, path):  # what taoflow no longer does, through vLLM's API directly
            body = {"lora_name": MODEL, "lora_path": path, "load_inplace": True}
            assert httpx.post(replica.url + "/v1/load_lora_adapter", json=body, timeout=60).status_code == 200

        def taoflow(replica, path):
            replace_adapter(replica, MODEL, path, served=replica.view().adapters.get(MODEL))

        strategies = {"in place (vLLM load_inplace)": in_place, "unload, then load (taoflow)": taoflow}
        primitive: dict[str, tuple[int, int]] = {}
        for name, swap in strategies.items():
            with Load(urls, 4, max_tokens=1) as load:
                time.sleep(2.0)
                for cycle in range(10):
                    for replica in replicas:
                        swap(replica, paths[cycle % 2])
                    time.sleep(0.3)
                time.sleep(1.0)
            primitive[name] = (sum(1 for r in load.results if r[2] != 200), len(load.results))

        # The steady state after a swap, on one quiet replica: fresh load, then two swaps with each primitive.
        steady: dict[str, tuple[float, float, float]] = {}
        probe = replicas[0]
        for name, swap in strategies.items():
            probe.unload(MODEL)
            probe.load(MODEL, paths[1])
            fresh = steady_latency(probe.url)
            swap(probe, paths[0])
            once = steady_latency(probe.url)
            swap(probe, paths[1])
            twice = steady_latency(probe.url)
            steady[name] = (fresh, once, twice)

        p50q, p99q = percentile(quiet, 0.5), percentile(quiet, 0.99)
        p50s, p99s = percentile(swapping, 0.5), percentile(swapping, 0.99)
        print()
        print(
            f"gate pass -> all {len(urls)} replicas serving (promote, canary + smoke on 4 prompts): "
            f"{swap_seconds[0]:.2f} s; rollback deploy: {swap_seconds[1]:.2f} s"
        )
        print(f"client latency without swap (reference): p50 {p50q:.3f} s, p99 {p99q:.3f} s, {len(quiet)} requests")
        print(f"client latency during swaps:             p50 {p50s:.3f} s, p99 {p99s:.3f} s, {len(swapping)} requests")
        print(
            f"ratio swap/no-swap: p50 x{p50s / p50q:.2f}, p99 x{p99s / p99q:.2f}; "
            f"median swap-phase latency {statistics.median(swapping):.3f} s"
        )
        print(f"failed requests: no swap {failures['quiet']}, taoflow deploys {failures['swap']}")
        for name, (failed, total) in primitive.items():
            print(f"swap primitive '{name}', 10 swaps per replica under 1-token load: {failed} of {total} failed")
        for name, (fresh, once, twice) in steady.items():
            print(
                f"steady state, '{name}': median of 10 x 32 tokens {fresh:.3f} s fresh, {once:.3f} s after one swap "
                f"(x{once / fresh:.2f}), {twice:.3f} s after two (x{twice / fresh:.2f})"
            )
    finally:
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()

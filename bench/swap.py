"""Hot-swapping an adapter into a live fleet: how long it takes and what clients see meanwhile.

    .venv/bin/python -m bench.swap [--seconds 20] [--clients 2]

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

import statistics
import tempfile
import time
from pathlib import Path

from bench.lib import cli
from bench.lib.fleet import MODEL, Load, percentile, replicas, steady_latency, train_adapters


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each no-swap phase")
    parser.add_argument("--clients", type=int, default=2, help="client threads per replica")
    parser.add_argument("--swaps", type=int, default=10, help="swaps per replica with each primitive")
    parser.add_argument("--steady-requests", type=int, default=10, help="sequential requests per steady latency")
    parser.add_argument("--replicas", help="comma-separated URLs of two running vLLM servers of the base model")
    parser.add_argument("--adapter-epochs", type=float, default=6.0, help="training of the two adapters swapped")
    smoke = {"seconds": 1.0, "clients": 1, "swaps": 2, "steady_requests": 2, "adapter_epochs": 1.0}
    args = cli.parse(parser, argv, smoke=smoke)

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
    from tests.support.state import hold_out, store_adapter

    root = Path(tempfile.mkdtemp(prefix="taoflow-bench-swap-"))
    settings = load_settings(None)
    base = resolve_base_model(settings.model.base, cache_dir=settings.model.cache_dir.expanduser())
    print("training two adapters ...", flush=True)
    adapters = train_adapters(root, base.path, epochs=args.adapter_epochs)
    with replicas(base.path, root, args.replicas.split(",") if args.replicas else None) as urls:
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
        clients = [VllmReplica(u) for u in urls]

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
                for cycle in range(args.swaps):
                    for replica in clients:
                        swap(replica, paths[cycle % 2])
                    time.sleep(0.3)
                time.sleep(1.0)
            primitive[name] = (sum(1 for r in load.results if r[2] != 200), len(load.results))

        # The steady state after a swap, on one quiet replica: fresh load, then two swaps with each primitive.
        steady: dict[str, tuple[float, float, float]] = {}
        probe = clients[0]
        for name, swap in strategies.items():
            probe.unload(MODEL)
            probe.load(MODEL, paths[1])
            fresh = steady_latency(probe.url, args.steady_requests)
            swap(probe, paths[0])
            once = steady_latency(probe.url, args.steady_requests)
            swap(probe, paths[1])
            twice = steady_latency(probe.url, args.steady_requests)
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
            swaps = f"{args.swaps} swaps per replica under 1-token load"
            print(f"swap primitive '{name}', {swaps}: {failed} of {total} failed")
        for name, (fresh, once, twice) in steady.items():
            print(
                f"steady state, '{name}': median of {args.steady_requests} x 32 tokens {fresh:.3f} s fresh, "
                f"{once:.3f} s after one swap "
                f"(x{once / fresh:.2f}), {twice:.3f} s after two (x{twice / fresh:.2f})"
            )


if __name__ == "__main__":
    main()

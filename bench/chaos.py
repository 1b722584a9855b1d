"""The whole loop under chaos, long form: clients → two gateways → Kafka (tansu on S3) → `taoflow run` → rounds →
deploys with gateway routing → the same clients, for `--minutes`, while the broker, the daemon, a vLLM replica and
a gateway are SIGKILLed and started again, a cycle of the four after another in a random order at random moments,
with the chart's rules in a real Prometheus.

    .venv/bin/python -m bench.chaos [--minutes 60] [--seed 7] [--clients 2] [--cooldown 240]

Two real vLLM CPU servers of SmolLM2-135M (.venv-vllm) and a champion adapter trained here. Printed: requests
answered and failed (each failed attempt must lie in a kill's window: in flight on the gateway or replica that
died), exchanges captured and buffered (each once), rounds and deploys by outcome, the champion at the end on
every replica and gateway, and each alert's firing and resolution. Exits 1 when any of that is violated. The short
form (one cycle) is tests/e2e/test_chaos.py; `--smoke` runs that one cycle here.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from bench.lib import cli
from bench.lib.fleet import train_adapters


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--minutes", type=float, default=60.0, help="cycles of kills start until this has passed")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clients", type=int, default=2, help="streaming client threads")
    parser.add_argument("--cooldown", type=float, default=240.0, help="retrain.cooldown_seconds between rounds")
    parser.add_argument("--adapter-epochs", type=float, default=2.0, help="training of the first champion")
    args = cli.parse(parser, argv, smoke={"minutes": 0.0, "adapter_epochs": 1.0})

    from taoflow.connectors.generation.base_model import resolve_base_model
    from taoflow.daemon.settings import load_settings
    from tests.support.chaos import run_chaos
    from tests.support.servers import vllm_servers

    root = Path(tempfile.mkdtemp(prefix="taoflow-bench-chaos-"))
    settings = load_settings(None)
    base = resolve_base_model(settings.model.base, cache_dir=settings.model.cache_dir.expanduser())
    print("training the first champion ...", flush=True)
    champion = train_adapters(root, base.path, epochs=args.adapter_epochs)["v1"]
    with vllm_servers(base.path, root) as servers:  # killed and started again by the run, stopped here
        figures = run_chaos(
            servers,
            champion,
            base,
            root / "loop",
            seed=args.seed,
            minutes=args.minutes,
            clients=args.clients,
            cooldown_s=args.cooldown,
            say=lambda line: print(line, flush=True),
        )
    for line in figures.lines():
        print(line)
    problems = figures.problems()
    for problem in problems:
        print(f"VIOLATED: {problem}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()

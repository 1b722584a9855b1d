"""The demo's round as a Ray job (`round.runner: ray`) against the same round run locally, in one run.

    .venv/bin/python -m bench.ray_round [--max-prompts 160] [--workers 1] [--generation-batch 256]

Both sides: the demo's settings (daemon/cli/samples/demo.yaml), the same sample logs ingested into their own state
(so the same training and held-out prompts), one `taoflow round` process each, timed from start to exit. The Ray
side runs against a two-node cluster on loopback (a head node holding the Jobs API and the job's driver, and a
worker node with this machine's two cores for the stages' actors and training workers), the round's files on a
real S3 endpoint (moto's server); the cluster's start-up is reported apart (an existing cluster is the setting).
One evaluator judges both adapters and the base model: greedy `evaluate` with the demo's verifiers on the same
held-out prompts, in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.lib import cli
from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.daemon.cli.demo import SAMPLES
from taoflow.daemon.round.evaluation import evaluate
from taoflow.daemon.round.parts import build_scorers, resolve_model
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.state import open_state
from tests.support.brokers import moto_s3
from tests.support.servers import RayTestCluster

CLI = [sys.executable, "-m", "taoflow.daemon.cli"]


def side_config(work: Path, name: str, args, extra: dict) -> Path:
    data = yaml.safe_load((SAMPLES / "demo.yaml").read_text())
    data["storage"] = {"state_dir": str(work / name)}
    data["source"]["paths"] = [str(SAMPLES / "arithmetic.jsonl"), str(SAMPLES / "json_extract.jsonl")]
    data["generate"]["max_prompts"] = args.max_prompts
    if args.n is not None:
        data["generate"]["n"] = args.n
    if args.max_new_tokens is not None:
        data["generate"]["max_new_tokens"] = data.setdefault("gate", {})["max_new_tokens"] = args.max_new_tokens
    if args.epochs is not None:
        data.setdefault("train", {})["epochs"] = args.epochs
    if args.heldout is not None:
        data.setdefault("ingest", {})["heldout_max_per_task"] = args.heldout
    data.update(extra)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_side(config: Path, env: dict[str, str]) -> tuple[float, object, object]:
    subprocess.run([*CLI, "ingest", "--config", str(config)], check=True, env=env, capture_output=True)
    started = time.perf_counter()
    done = subprocess.run([*CLI, "round", "--config", str(config), "--no-progress"], env=env, capture_output=True)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 3, 6):  # promoted, rejected by its gate, skipped (nothing to learn)
        sys.exit(f"{config.stem} round failed ({done.returncode}):\n{done.stderr.decode()[-4000:]}")
    state = open_state(load_settings(config))
    record = RoundStore(state.db, state.rounds_dir).get(1)
    return wall, record, state


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--max-prompts", type=int, default=160, help="the demo's generate.max_prompts")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (the local side trains in one)")
    parser.add_argument(
        "--generation-batch",
        type=int,
        default=256,
        help="ray.generation.batch: prompts per batch, each sampled with its own seed (256 holds the demo's 160 "
        "prompts in one batch: the local runner's sampling, candidate for candidate)",
    )
    parser.add_argument("--n", type=int, help="generate.n (default: the demo's)")
    parser.add_argument("--max-new-tokens", type=int, help="generate and gate max_new_tokens (default: the demo's)")
    parser.add_argument("--epochs", type=float, help="train.epochs (default: the demo's)")
    parser.add_argument("--heldout", type=int, help="ingest.heldout_max_per_task (default: the demo's)")
    args = cli.parse(parser, argv, smoke={"max_prompts": 8, "n": 4, "max_new_tokens": 48, "epochs": 1.0, "heldout": 4})
    work = Path(tempfile.mkdtemp(prefix="taoflow-bench-ray-"))
    s3_env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    env = {**os.environ, **s3_env}
    local_config = side_config(work, "local", args, {})
    print(f"local runner: taoflow round on this machine ({args.max_prompts} prompts) ...", flush=True)
    local_wall, local_record, local_state = run_side(local_config, env)
    print(f"  {local_wall:.0f} s", flush=True)

    with moto_s3() as endpoint:
        import boto3

        os.environ.update(s3_env)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="rounds")
        started = time.perf_counter()
        cluster = RayTestCluster(head_cpus=0)
        cluster.add_worker(cpus=2)
        cluster_start = time.perf_counter() - started
        try:
            ray = {
                "address": cluster.address,
                "exchange": {"uri": "s3://rounds/bench", "endpoint_url": endpoint},
                "python": sys.executable,
                "generation": {"cpus": 2, "batch": args.generation_batch},
                "train": {"cpus": 2 / args.workers, "workers": args.workers},
                "poll_seconds": 1.0,
            }
            ray_config = side_config(work, "ray", args, {"round": {"runner": "ray"}, "ray": ray})
            print(f"ray runner: the same round as a Ray job (cluster up in {cluster_start:.1f} s) ...", flush=True)
            ray_wall, ray_record, ray_state = run_side(ray_config, {**env, "TAOFLOW_RAY__TOKEN": cluster.TOKEN})
            print(f"  {ray_wall:.0f} s", flush=True)
        finally:
            cluster.shutdown()

    print("one evaluator: greedy, the demo's verifiers, the same held-out prompts ...", flush=True)
    settings = load_settings(local_config)
    heldout = [p.record for p in local_state.buffer.heldout()]
    assert [p.record.request_id for p in ray_state.buffer.heldout()] == [r.request_id for r in heldout]
    generator = TransformersGenerator(resolve_model(settings).path, batch_rows=settings.generate.batch_rows)
    scorers = build_scorers(settings)
    tokens = settings.gate.max_new_tokens

    def adapter(record, state):  # a skipped round has none: the base model stands for it
        return state.store.fetch(record.version) if record.version else None

    scores = {
        "base model": evaluate(generator, heldout, scorers, adapter=None, max_new_tokens=tokens),
        "local runner": evaluate(
            generator, heldout, scorers, adapter=adapter(local_record, local_state), max_new_tokens=tokens
        ),
        "ray runner": evaluate(
            generator, heldout, scorers, adapter=adapter(ray_record, ray_state), max_new_tokens=tokens
        ),
    }
    for name, record in (("local", local_record), ("ray", ray_record)):
        if record.version is None:
            print(f"  the {name} round trained nothing ({record.status}: {record.reason})")
    tasks = sorted(scores["base model"].scores)
    print(f"\n| side | {' | '.join(tasks)} | lift (mean over tasks) | round wall time | x local |")
    print(f"| --- | {' | '.join('---' for _ in tasks)} | --- | --- | --- |")
    base = sum(scores["base model"].mean(t) for t in tasks) / len(tasks)
    walls = {"base model": None, "local runner": local_wall, "ray runner": ray_wall}
    for name, evaluation in scores.items():
        mean = sum(evaluation.mean(t) for t in tasks) / len(tasks)
        cells = " | ".join(f"{evaluation.mean(t):.3f}" for t in tasks)
        wall = walls[name]
        if wall is None:
            print(f"| {name} | {cells} | - | - | - |")
        else:
            print(f"| {name} | {cells} | {mean - base:+.3f} | {wall:.0f} s | x{wall / local_wall:.2f} |")
    print("\nstage seconds (round summaries):")
    for name, record in (("local", local_record), ("ray", ray_record)):
        print(f"  {name}: {record.summary.seconds()}")
    job = ray_record.files.cluster_stages()
    stages = {k: getattr(job, k).seconds for k in ("generate", "score", "train") if getattr(job, k)}
    print(f"  ray job stages: {stages}")
    print(f"\ncluster start-up (two nodes, not in the round's time): {cluster_start:.1f} s; work in {work}")


if __name__ == "__main__":
    main()

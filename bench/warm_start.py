"""Successive rounds on disjoint prompt sets: each round's adapter starting from the champion's weights
(`train.init: champion`) against a fresh adapter each round (`train.init: base`), in one run.

    .venv/bin/python bench/warm_start.py [--task arithmetic|json_extract] [--rounds 3] [--prompts 32] [--n 6]

Each side is one state directory and `--rounds` `taoflow round` processes, each on its own new prompts (the
flywheel: new traffic every round), the gate set to promote every adapter (min_mean_improvement -1, so the
next round has it as champion). One evaluator judges every adapter: greedy `evaluate` with the task's verifiers
on the same held-out prompts no round trained on; the base model is the first row.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring import TAOFLOW, TASKS, record

from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.daemon.round.evaluation import evaluate
from taoflow.daemon.round.parts import build_scorers, resolve_model
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.state import open_state


def promoting_config(work: Path, name: str, task, *, generate: dict, train: dict) -> Path:
    """A side's settings file: the bench's model and budget, its own state directory, and a gate that promotes
    every adapter (one evaluator outside the rounds judges them)."""
    data = {
        "model": {"served_name": "bench"},
        "storage": {"state_dir": str(work / name)},
        "ingest": {"heldout_fraction": 0.0},
        "generate": {"temperature": 0.7, "max_new_tokens": 32, **generate},
        "score": {"tasks": {task.name: task.verifier}},
        "train": {"lora_rank": 16, "epochs": 3, "learning_rate": 1e-3, "batch_size": 8, **train},
        "gate": {
            "min_samples": 4,
            "max_new_tokens": 32,
            "min_mean_improvement": -1.0,
            "max_slice_regression": 1.0,
            "confidence": 0.0,
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def side_config(work: Path, init: str, args, task) -> Path:
    return promoting_config(work, init, task, generate={"n": args.n, "max_prompts": args.prompts}, train={"init": init})


def one_round(path: Path, task, prompts, first_id: int, gate_prompts) -> dict:
    state = open_state(load_settings(path))
    state.buffer.add_many([(record(task, first_id + i, p), None) for i, p in enumerate(prompts)], source="bench")
    heldout = PromptBuffer(state.db, heldout_fraction=1.0, heldout_max_per_task=len(gate_prompts))
    heldout.add_many([(record(task, 100_000 + i, p), None) for i, p in enumerate(gate_prompts)], source="bench")
    started = time.perf_counter()
    subprocess.run([str(TAOFLOW), "round", "--config", str(path), "--no-progress"], check=False)
    seconds = time.perf_counter() - started
    row = state.db.query("SELECT status, version, summary FROM rounds ORDER BY id DESC LIMIT 1")[0]
    summary = json.loads(row["summary"])
    adapter = state.store.fetch(row["version"]) if row["version"] else None
    champion = state.registry.alias("bench", "champion")
    state.close()
    return {
        "status": row["status"],
        "adapter": adapter,
        "init": summary.get("train", {}).get("init"),
        "examples": summary.get("train", {}).get("examples"),
        "candidate_tokens": summary.get("generate", {}).get("tokens", 0),
        "champion": champion,
        "seconds": seconds,
    }


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=sorted(TASKS), default="arithmetic")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--heldout", type=int, default=48)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="taoflow-bench-warm-"))
    task = TASKS[args.task]()
    eval_settings = load_settings(
        None,
        storage={"state_dir": str(work / "eval")},
        score={"tasks": {task.name: task.verifier}, "sandbox": {"enabled": False}},
    )
    base = resolve_model(eval_settings).path
    problems = task.problems(random.Random(11))
    heldout, gate_prompts = problems[200 : 200 + args.heldout], problems[300:316]
    batches = [problems[400 + r * args.prompts : 400 + (r + 1) * args.prompts] for r in range(args.rounds)]
    results: dict[str, list[dict]] = {}
    for init in ("champion", "base"):
        path = side_config(work, init, args, task)
        results[init] = []
        for r, batch in enumerate(batches):
            print(f"== init {init}, round {r + 1}", flush=True)
            results[init].append(one_round(path, task, batch, 10_000 * (r + 1), gate_prompts))

    generator = TransformersGenerator(base, batch_rows=96)
    scorers = build_scorers(eval_settings)
    shared = [record(task, 200_000 + i, p) for i, p in enumerate(heldout)]

    def measure(adapter: Path | None) -> float:
        return evaluate(generator, shared, scorers, adapter=adapter, max_new_tokens=48).mean(task.name)

    before = measure(None)
    print(
        f"\none evaluator: greedy, 48 tokens, the {task.name} verifiers, {len(shared)} held-out prompts; "
        f"{args.rounds} rounds of {args.prompts} new prompts x {args.n}; base {before:.1%}"
    )
    print(f"{'round':>5}  {'champion-init':>22}  {'base-init':>22}")
    for r in range(args.rounds):
        cells = []
        for init in ("champion", "base"):
            row = results[init][r]
            score = measure(row["adapter"]) if row["adapter"] else float("nan")
            cells.append(f"{score:6.1%} ({row['status']}, {row['examples']} ex, {row['seconds']:.0f} s)")
        print(f"{r + 1:>5}  {cells[0]:>22}  {cells[1]:>22}")
    inits = [[row["init"] for row in rows] for rows in results.values()]
    print(f"started from: champion-init {inits[0]}; base-init {inits[1]}")


if __name__ == "__main__":
    main()

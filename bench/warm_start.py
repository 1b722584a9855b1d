"""Successive rounds on disjoint prompt sets: each round's adapter starting from the champion's weights
(`train.init: champion`) against a fresh adapter each round (`train.init: base`), in one run.

    .venv/bin/python -m bench.warm_start [--task arithmetic|json_extract] [--rounds 3] [--prompts 32] [--n 6]

Each side is one state directory and `--rounds` `taoflow round` processes, each on its own new prompts (the
flywheel: new traffic every round), the gate set to promote every adapter (min_mean_improvement -1, so the
next round has it as champion). One evaluator judges every adapter: greedy `evaluate` with the task's verifiers
on the same held-out prompts no round trained on; the base model is the first row.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from bench.lib import cli
from bench.lib.rounds import one_round, promoting_config
from bench.lib.tasks import TASKS, record
from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.daemon.round.evaluation import evaluate
from taoflow.daemon.round.parts import build_scorers, resolve_model
from taoflow.daemon.settings import load_settings


def side_config(work: Path, init: str, args, task) -> Path:
    generate = {"n": args.n, "max_prompts": args.prompts, "max_new_tokens": args.max_new_tokens}
    return promoting_config(work, init, task, generate=generate, train={"init": init, "epochs": args.epochs})


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--task", choices=sorted(TASKS), default="arithmetic")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--heldout", type=int, default=48)
    parser.add_argument("--gate-prompts", type=int, default=16, help="held-out prompts of each round's own gate")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="longest candidate and gate answer")
    parser.add_argument("--epochs", type=float, default=3.0)
    args = cli.parse(
        parser,
        argv,
        smoke={
            "task": "json_extract",  # the base model solves some of these at any size: the rounds train
            "rounds": 2,
            "prompts": 6,
            "n": 4,
            "heldout": 4,
            "gate_prompts": 4,
            "max_new_tokens": 32,
            "epochs": 1,
        },
    )
    work = Path(tempfile.mkdtemp(prefix="taoflow-bench-warm-"))
    task = TASKS[args.task]()
    eval_settings = load_settings(
        None,
        storage={"state_dir": str(work / "eval")},
        score={"tasks": {task.name: task.verifier}, "sandbox": {"enabled": False}},
    )
    base = resolve_model(eval_settings).path
    problems = task.problems(random.Random(11))
    heldout, gate_prompts = problems[200 : 200 + args.heldout], problems[300 : 300 + args.gate_prompts]
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

"""The scaling curve: held-out score against tuning compute, at the same inference cost.

    .venv/bin/python -m bench.scaling [--tasks arithmetic json_extract] [--n 1 2 4 8 16] [--prompts 48]
                                        [--prompt-axis 16 32 64 96] [--axis-n 8] [--heldout 48] [--seeds 1]

Two axes of test-time compute, each point one `taoflow round` process on a fresh state directory: candidates per
prompt (n, at --prompts prompts) and prompts per round (at --axis-n candidates). Tuning compute is what the round
spent generating: the candidate tokens its summary records. One evaluator judges every adapter and the base
model: greedy `evaluate` with the task's verifiers on the same held-out prompts no round saw. Inference cost is
the evaluator's answer tokens per prompt: a LoRA adapter answers in one greedy pass like the base model, so the
tuned model costs what the base costs per token. Writes docs/scaling.csv and docs/scaling.png (matplotlib).
"""

from __future__ import annotations

import csv
import math
import random
import statistics
import tempfile
from pathlib import Path

from bench.lib import cli
from bench.lib.rounds import one_round, promoting_config
from bench.lib.tasks import ROOT, TASKS, record
from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.daemon.round.evaluation import evaluate
from taoflow.daemon.round.parts import build_scorers, resolve_model
from taoflow.daemon.settings import load_settings

FIELDS = [
    "task",
    "axis",
    "n",
    "prompts",
    "seed",
    "candidate_tokens",
    "examples",
    "round_seconds",
    "status",
    "heldout_score",
    "answer_tokens",
]


def plot(rows: list[dict], path: Path) -> None:
    """One panel per task: held-out score against candidate tokens, each axis a line, the base model dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 4.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [r for r in rows if r["task"] == task]
        for axis, label, key in (("n", "candidates per prompt (n)", "n"), ("prompts", "prompts per round", "prompts")):
            # A skipped round has no adapter to score: it has no point on the curve (the table keeps its row).
            kept = (r for r in mine if r["axis"] == axis and math.isfinite(r["heldout_score"]))
            points = sorted(kept, key=lambda r: r["candidate_tokens"])
            if not points:
                continue
            xs = [r["candidate_tokens"] for r in points]
            ys = [100 * r["heldout_score"] for r in points]
            ax.plot(xs, ys, marker="o", label=f"varying {label}")
            offset = (4, -12) if axis == "n" else (-10, 7)  # the two axes' labels on either side of their points
            for r, x, y in zip(points, xs, ys, strict=True):
                ax.annotate(f"{key}={r[key]}", (x, y), textcoords="offset points", xytext=offset, fontsize=8)
        base = next(r for r in mine if r["axis"] == "base")["heldout_score"]
        ax.axhline(100 * base, color="grey", linestyle="--", label="base model (no tuning)")
        ax.set_xscale("log")
        ax.set_xlabel("tuning compute: candidate tokens generated in the round (log)")
        ax.set_ylabel("held-out score, % (greedy, one evaluator)")
        ax.set_title(f"one round on {task}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("taoflow, SmolLM2-135M on CPU: the tuned model answers in one greedy pass, like the base", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--tasks", choices=sorted(TASKS), nargs="*", default=["arithmetic", "json_extract"])
    parser.add_argument("--n", type=int, nargs="*", default=[1, 2, 4, 8, 16])
    parser.add_argument("--prompts", type=int, default=48, help="prompts per round on the n axis")
    parser.add_argument("--prompt-axis", type=int, nargs="*", default=[16, 32, 64, 96])
    parser.add_argument("--axis-n", type=int, default=8, help="candidates per prompt on the prompts axis")
    parser.add_argument("--heldout", type=int, default=48)
    parser.add_argument("--seeds", type=int, default=1, help="rounds per point (the median is reported)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--replot", type=Path, help="only draw the plot again from this scaling.csv")
    parser.add_argument("--gate-prompts", type=int, default=16, help="held-out prompts of each round's own gate")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="longest candidate and gate answer")
    smoke_out = Path(tempfile.mkdtemp(prefix="taoflow-bench-scaling-smoke-"))  # never docs/ at the smoke size
    args = cli.parse(
        parser,
        argv,
        smoke={
            "tasks": ["json_extract"],  # the base model solves some of these at any size: the rounds train
            "n": [4],
            "prompts": 6,
            "prompt_axis": [8],
            "axis_n": 4,
            "heldout": 4,
            "gate_prompts": 4,
            "max_new_tokens": 32,
            "out": smoke_out,
        },
    )
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.replot:
        work = Path(tempfile.mkdtemp(prefix="taoflow-bench-scaling-"))
        rows = [row for name in args.tasks for row in run_task(TASKS[name](), args, work / name)]
        with (args.out / "scaling.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in FIELDS})
    rows = read_table(args.replot or args.out / "scaling.csv")
    plot(rows, args.out / "scaling.png")
    for task in dict.fromkeys(r["task"] for r in rows):
        print(f"\n{task}: one evaluator, greedy, 48 tokens, {args.heldout} held-out prompts")
        print(
            f"{'axis':>8} {'n':>3} {'prompts':>7} {'cand. tokens':>12} {'examples':>8} {'round s':>8} "
            f"{'score':>7} {'answer tok':>10}"
        )
        for r in rows:
            if r["task"] == task:
                print(
                    f"{r['axis']:>8} {r['n']:>3} {r['prompts']:>7} {r['candidate_tokens']:>12} {r['examples']:>8} "
                    f"{r['round_seconds']:>8} {r['heldout_score']:>7.1%} {r['answer_tokens']:>10}"
                )
    print(f"wrote {args.out / 'scaling.csv'} and {args.out / 'scaling.png'}")


def run_task(task, args, work: Path) -> list[dict]:
    """The task's rounds, then one evaluator over the base model and every adapter: the table's rows."""
    work.mkdir(parents=True, exist_ok=True)
    eval_settings = load_settings(
        None,
        storage={"state_dir": str(work / "eval")},
        score={"tasks": {task.name: task.verifier}, "sandbox": {"enabled": False}},
    )
    problems = task.problems(random.Random(11))
    heldout, gate_problems, pool = (
        problems[200 : 200 + args.heldout],
        problems[300 : 300 + args.gate_prompts],
        problems[400:],
    )
    points = [("n", n, args.prompts) for n in args.n] + [("prompts", args.axis_n, p) for p in args.prompt_axis]
    runs = []
    for axis, n, prompts in points:
        for seed in range(args.seeds):
            name = f"{axis}-n{n}-p{prompts}-s{seed}"
            print(f"== {task.name} {name}", flush=True)
            path = promoting_config(
                work,
                name,
                task,
                generate={"n": n, "max_prompts": prompts, "seed": seed, "max_new_tokens": args.max_new_tokens},
                train={"seed": seed},
            )
            result = one_round(path, task, random.Random(seed).sample(pool, prompts), 10_000, gate_problems)
            runs.append(
                {
                    "axis": axis,
                    "n": n,
                    "prompts": prompts,
                    "seed": seed,
                    "status": result["status"],
                    "adapter": result["adapter"],
                    "candidate_tokens": result["candidate_tokens"],
                    "examples": result["examples"] or 0,
                    "round_seconds": round(result["seconds"], 1),
                }
            )

    generator = TransformersGenerator(resolve_model(eval_settings).path, batch_rows=96)
    scorers = build_scorers(eval_settings)
    shared = [record(task, 200_000 + i, p) for i, p in enumerate(heldout)]

    def measure(adapter: Path | None) -> tuple[float, float]:
        result = evaluate(generator, shared, scorers, adapter=adapter, max_new_tokens=48)
        tokens = [len(generator.tokenizer(a, add_special_tokens=False).input_ids) for a in result.answers]
        return result.mean(task.name), statistics.mean(tokens)

    base, base_tokens = measure(None)
    for run in runs:
        score, tokens = measure(run.pop("adapter")) if run["adapter"] else (float("nan"), float("nan"))
        run.update(task=task.name, heldout_score=round(score, 4), answer_tokens=round(tokens, 1))
    generator.close()
    base_row = {"task": task.name, "axis": "base", "n": 0, "prompts": 0, "candidate_tokens": 0}
    return [{**base_row, "heldout_score": round(base, 4), "answer_tokens": round(base_tokens, 1)}, *_medians(runs)]


def read_table(table: Path) -> list[dict]:
    with table.open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key in ("n", "prompts", "candidate_tokens"):
            row[key] = int(float(row[key]))
        row["heldout_score"] = float(row["heldout_score"])
    return rows


def _medians(runs: list[dict]) -> list[dict]:
    """One row per point: the median over seeds of each figure (the seed column says how many)."""
    points: dict[tuple, list[dict]] = {}
    for run in runs:
        points.setdefault((run["axis"], run["n"], run["prompts"]), []).append(run)
    rows = []
    for (axis, n, prompts), group in points.items():
        row = {"task": group[0]["task"], "axis": axis, "n": n, "prompts": prompts, "seed": f"{len(group)} runs"}
        for key in ("candidate_tokens", "examples", "round_seconds", "heldout_score", "answer_tokens"):
            row[key] = statistics.median(g[key] for g in group)
        row["status"] = ",".join(sorted({g["status"] for g in group}))
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()

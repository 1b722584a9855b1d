"""Label-free rounds against supervised fine-tuning on gold answers, on the demo tasks, in one run.

    .venv/bin/python -m bench.versus_supervised [--tasks arithmetic json_extract capitals] [--labeled 32] [--rounds 3]
                                                  [--factor 4] [--wide-rounds 3] [--heldout 48] [--seeds 1 2 3]
                                                  [--lrs 3e-4 1e-3 3e-3] [--set train.objective=dpo ...]

Per task and seed, from the same base model:
- supervised: a LoRA adapter trained on the gold answers of L labeled prompts (`--labeled`), with the training
  settings' defaults (rank, epochs, batch) and its learning rate chosen by a sweep (`--lrs`) on a validation split;
- taoflow, no labels, on the same L prompts: one round, then rounds 2..K (`--rounds`) on the same state: the
  flywheel as it runs, each round's adapter continuing the champion's, the prompts no candidate solved retried
  (`generate.retry_unsolved`), the gate deciding what is served;
- taoflow, no labels, on factor x L prompts (`--factor`): unlabeled prompts are the cheap resource; rounds 1..W
  (`--wide-rounds`) on that state as above.
- a judged task only: one wide round under taoflow's default scorer, self-consistency (the majority answer as the
  pseudo-label) instead of the judge (`consensus`); its gate cannot score a single greedy answer by agreement, so
  the round's adapter is measured beside the champion ("trained, ungated").
The taoflow sides run `taoflow round` with the settings' defaults (the recipe under test, the gate's included, on
the validation prompts; `--set` overrides any of it), only the round's size, answer length and seeds set here;
each is measured by the champion after its rounds: what the fleet would serve. One evaluator judges every adapter
and the base model: greedy `evaluate` with the task's verifiers on the same held-out prompts no side trained on.
The judged task (capitals: short factual answers) is the one no program in a round can check: its rounds score
with an LLM judge only (the same small model on a vLLM CPU server, relative: a prompt's candidates in one call), its
gate too, and the evaluator's checker reads a table no round sees.
Each figure is the median over `--seeds` (prompts drawn, sampling and training seeded by it). Tuning compute:
candidate tokens generated and tokens the trainer fed the model (the supervised side: its whole sweep). Writes
docs/versus_supervised.csv and docs/versus_supervised.png (matplotlib).
"""

from __future__ import annotations

import csv
import json
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from bench.lib import cli
from bench.lib.tasks import ROOT, TAOFLOW, TASKS, record
from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.connectors.training.lora import DistillExample, TrainingConfig, train_adapter
from taoflow.daemon.round.evaluation import evaluate
from taoflow.daemon.round.parts import build_scorers, resolve_model
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.state import open_state

FIELDS = [
    "task",
    "side",
    "seed",
    "prompts",
    "rounds",
    "learning_rate",
    "examples",
    "promoted",
    "candidate_tokens",
    "training_tokens",
    "seconds",
    "heldout_score",
    "lift",
]


def parse_overrides(pairs: list[str]) -> dict:
    """`a.b=value` pairs (values read as YAML) as nested settings."""
    tree: dict = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return tree


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def round_config(
    work: Path, name: str, task, *, prompts: int, seed: int, tokens: int, overrides: dict, scorers: list | None
) -> Path:
    """A taoflow side: the settings' defaults (the gate's too, on the validation prompts as its held-out set) but
    for the round's size, answer length and seeds. A judged task's rounds score with its judge only."""
    data = {
        "model": {"served_name": "bench"},
        "storage": {"state_dir": str(work / name)},
        "ingest": {"heldout_fraction": 0.0},
        "generate": {"max_prompts": prompts, "max_new_tokens": tokens, "seed": seed},
        "score": {"tasks": {task.name: scorers} if scorers is not None else {}},
        "train": {"seed": seed},
        "gate": {"max_new_tokens": tokens},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(merge(data, overrides)))
    return path


def add_prompts(path: Path, task, problems, first_id: int, gate_problems) -> None:
    state = open_state(load_settings(path))
    state.buffer.add_many([(record(task, first_id + i, p), None) for i, p in enumerate(problems)], source="bench")
    heldout = PromptBuffer(state.db, heldout_fraction=1.0, heldout_max_per_task=len(gate_problems))
    heldout.add_many([(record(task, 900_000 + i, p), None) for i, p in enumerate(gate_problems)], source="bench")
    state.close()


def run_round(path: Path, after: int = 0) -> dict | None:
    """One `taoflow round` process; None when it recorded no round past `after` (nothing left to try). Its
    `adapter` is the champion after it (what the fleet serves: the round's adapter if the gate passed it)."""
    started = time.perf_counter()
    subprocess.run([str(TAOFLOW), "round", "--config", str(path), "--no-progress"], check=False)
    seconds = time.perf_counter() - started
    state = open_state(load_settings(path))
    try:
        latest = RoundStore(state.db, state.rounds_dir).latest("bench")
        if latest is None or latest.id <= after:
            return None
        s = latest.summary
        champion = state.registry.alias("bench", "champion")
        return {
            "id": latest.id,
            "status": latest.status,
            "promoted": bool(s.gate and s.gate.promoted),
            "adapter": state.store.fetch(champion) if champion else None,
            "trained": state.store.fetch(s.register.version) if s.register else None,
            "examples": s.train.examples if s.train else 0,
            "prompts": s.prepare.prompts if s.prepare else 0,
            "candidate_tokens": s.generate.tokens if s.generate else 0,
            "training_tokens": s.train.tokens if s.train else 0,
            "seconds": seconds,
        }
    finally:
        state.close()


def supervised(task, base: Path, problems, validation, lrs, seed: int, work: Path, judge) -> dict:
    """LoRA on gold answers: one adapter per learning rate, the best on the validation split kept."""
    examples = [DistillExample(record(task, i, p).messages, task.right(p)) for i, p in enumerate(problems)]
    defaults = load_settings(None).train
    started = time.perf_counter()
    tried = []
    for lr in lrs:
        config = TrainingConfig(
            lora_rank=defaults.lora_rank,
            lora_alpha=defaults.lora_alpha,
            epochs=defaults.epochs,
            batch_size=defaults.batch_size,
            learning_rate=lr,
            seed=seed,
        )
        result = train_adapter(base, examples, config, work_dir=work / f"sft-{lr:g}")
        tried.append((judge(validation, result.adapter_dir), lr, result))
        print(f"   supervised lr {lr:g}: validation {tried[-1][0]:.1%}", flush=True)
    _, lr, result = max(tried, key=lambda t: (t[0], -abs(t[1] - 1e-3)))
    return {
        "adapter": result.adapter_dir,
        "learning_rate": lr,
        "examples": len(examples),
        "candidate_tokens": 0,
        "training_tokens": sum(r.tokens for _, _, r in tried),
        "seconds": time.perf_counter() - started,
        "rounds": 0,
        "prompts": len(problems),
    }


def split(task, args) -> tuple[list, list, list]:
    """The task's problems as held-out (the evaluator's), validation (the sweep's and the gate's) and the pool the
    sides train on, at the task's `layout` (where each starts)."""
    problems = task.problems(random.Random(11))
    at_heldout, at_validation, at_pool = getattr(task, "layout", (200, 300, 400))
    return (
        problems[at_heldout : at_heldout + args.heldout],
        problems[at_validation : at_validation + args.validation],
        problems[at_pool:],
    )


def run_seed(task, args, seed: int, work: Path, base: Path, judge, heldout, scorers: list) -> list[dict]:
    """One seed's sides; `scorers`: the rounds' scorers of the task (its verifiers, or its judge)."""
    _, gate_problems, pool = split(task, args)
    validation = [record(task, 800_000 + i, p) for i, p in enumerate(gate_problems)]
    pool = list(pool)
    random.Random(seed).shuffle(pool)
    labeled, unlabeled = pool[: args.labeled], pool[: args.labeled * args.factor]
    overrides = parse_overrides(args.set)
    runs = []

    if "supervised" in args.sides:
        print(f"== {task.name} seed {seed}: supervised on {len(labeled)} gold answers", flush=True)
        sft = supervised(task, base, labeled, validation, args.lrs, seed, work / f"sft-s{seed}", judge)
        runs.append({"side": "supervised", **sft})

    def flywheel(name: str, problems: list, rounds: int, label, scorers, *, ungated: bool = False) -> None:
        """Rounds 1..`rounds` on one state over `problems`, a row after each (`label(r)` names it)."""
        path = round_config(
            work, f"{name}-s{seed}", task, prompts=len(problems), seed=seed, tokens=args.answer_tokens,
            overrides=overrides, scorers=scorers,
        )  # fmt: skip
        add_prompts(path, task, problems, 10_000, gate_problems)
        spent = {"candidate_tokens": 0, "training_tokens": 0, "seconds": 0.0, "examples": 0}
        after = 0
        for r in range(1, rounds + 1):
            print(f"== {task.name} seed {seed}: {label(r)}, round {r} on {len(problems)} prompts", flush=True)
            found = run_round(path, after)
            if found is None:
                print("   nothing left to try", flush=True)
                break
            after = found["id"]
            for key in spent:
                spent[key] += found[key]
            runs.append({"side": label(r), **found, **spent, "rounds": r, "prompts": len(problems)})
            if ungated and found["trained"] is not None:  # what the round trained, had its gate let it through
                row = {**found, **spent, "adapter": found["trained"], "rounds": r, "prompts": len(problems)}
                runs.append({**row, "side": f"{label(r)} (trained, ungated)", "promoted": False})

    def named(prefix: str):
        return lambda r: prefix + (f", {r} rounds" if r > 1 else "")

    if "flywheel" in args.sides:
        flywheel("flywheel", labeled, args.rounds, lambda r: f"taoflow {r} round{'s' if r > 1 else ''}", scorers)
    if "wide" in args.sides:
        flywheel("wide", unlabeled, args.wide_rounds, named(f"taoflow {args.factor}x prompts"), scorers)
    if "consensus" in args.sides and getattr(task, "judged", False):
        # No scorer named for the task: taoflow's default, self-consistency (the majority answer of the candidates
        # as the pseudo-label: consensus, as test-time RL rewards prompts no verifier checks). The gate cannot
        # score one greedy answer by agreement, so it promotes nothing: one round, and its adapter measured too.
        flywheel("consensus", unlabeled, 1, named(f"taoflow consensus, {args.factor}x prompts"), None, ungated=True)

    for run in runs:
        run["heldout_score"] = judge(heldout, run["adapter"])  # no champion yet: the base model
        run["seed"] = seed
        run["task"] = task.name
    return runs


def run_task(task, args, work: Path) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    eval_settings = load_settings(
        None,
        storage={"state_dir": str(work / "eval")},
        score={"tasks": {task.name: task.verifier}, "sandbox": {"enabled": False}},
    )
    base = resolve_model(eval_settings).path
    scorers = task.verifier
    server = None
    if getattr(task, "judged", False):  # the judge: the same small model, served by a vLLM CPU server
        from tests.support.servers import VllmServer

        url = args.judge_url
        if url is None:
            server = VllmServer(base, work / "judge-server", core=1)
            try:
                server.start()
                server.wait_healthy()
            except BaseException:
                server.stop()
                raise
            url = server.url
        scorers = task.judge(url, str(base))
    try:
        if getattr(task, "judged", False):
            calibrate_judge(task, args, work, scorers)
        return measure_task(task, args, work, base, eval_settings, scorers)
    finally:
        if server is not None:
            server.stop()


def calibrate_judge(task, args, work: Path, scorers: list) -> None:
    """The judge checked before it drives training, as a user would: `taoflow scorers check --golden` on the
    validation prompts, each with its right answer (label 1) and a wrong one (label 0)."""
    rng = random.Random(5)
    rows = [
        {
            "task": task.name,
            "messages": [{"role": "user", "content": task.prompt(p)}],
            "candidates": [{"text": task.right(p), "label": 1.0}, {"text": task.wrong(p, rng), "label": 0.0}],
        }
        for p in split(task, args)[1]
    ]
    golden = work / "golden.jsonl"
    golden.write_text("".join(json.dumps(row) + "\n" for row in rows))
    path = round_config(
        work, "calibration", task, prompts=1, seed=0, tokens=args.answer_tokens, overrides={}, scorers=scorers
    )
    command = [str(TAOFLOW), "scorers", "check", "--config", str(path), "--golden", str(golden), "-o", "json"]
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=1800).stdout
    (found,) = [r for r in json.loads(out)["scorers"] if r["task"] == task.name and r["scorer"] == "judge"]
    calibration = found.get("calibration") or {}
    print(
        f"   judge on {len(rows)} golden prompts (a right and a wrong answer each): pairs agreed "
        f"{found.get('pairwise_accuracy')}, mean {found.get('mean')}, threshold {calibration.get('threshold')} at "
        f"balanced accuracy {calibration.get('balanced_accuracy')}",
        flush=True,
    )


def measure_task(task, args, work: Path, base: Path, eval_settings, round_scorers: list) -> list[dict]:
    generator = TransformersGenerator(base, batch_rows=96)
    evaluator = build_scorers(eval_settings)
    heldout = [record(task, 700_000 + i, p) for i, p in enumerate(split(task, args)[0])]

    def judge(records, adapter: Path | None) -> float:
        measured = evaluate(generator, records, evaluator, adapter=adapter, max_new_tokens=args.answer_tokens)
        return measured.mean(task.name)

    before = judge(heldout, None)
    rows = [{"task": task.name, "side": "base model", "seed": "", "heldout_score": before, "lift": 0.0}]
    for seed in args.seeds:
        for run in run_seed(task, args, seed, work, base, judge, heldout, round_scorers):
            run["lift"] = run["heldout_score"] - before
            rows.append(run)
    generator.close()
    return rows


def medians(rows: list[dict]) -> list[dict]:
    """One row per (task, side): the median of each figure over the seeds, with the scores' range."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for side in dict.fromkeys(r["side"] for r in rows if r["task"] == task):
            mine = [r for r in rows if r["task"] == task and r["side"] == side]

            def med(key: str, group: list[dict] = mine) -> float:
                values = [float(r[key]) for r in group if r.get(key) not in (None, "")]
                return statistics.median(values) if values else float("nan")

            scores = [float(r["heldout_score"]) for r in mine]
            lrs = sorted({float(r["learning_rate"]) for r in mine if r.get("learning_rate") not in (None, "")})
            out.append(
                {
                    "task": task,
                    "side": side,
                    "runs": len(mine),
                    "score": med("heldout_score"),
                    "lift": med("lift"),
                    "low": min(scores),
                    "high": max(scores),
                    "prompts": med("prompts"),
                    "examples": med("examples"),
                    "candidate_tokens": med("candidate_tokens"),
                    "training_tokens": med("training_tokens"),
                    "seconds": med("seconds"),
                    "learning_rates": "/".join(f"{lr:g}" for lr in lrs),
                }
            )
    return out


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in summary))
    fig, axes = plt.subplots(1, len(tasks), figsize=(7 * len(tasks), 4.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        mine = [r for r in summary if r["task"] == task and r["side"] != "base model"]
        base = next(r for r in summary if r["task"] == task and r["side"] == "base model")["score"]
        names = [r["side"] for r in mine]
        scores = [100 * r["score"] for r in mine]
        errors = [[100 * (r["score"] - r["low"]) for r in mine], [100 * (r["high"] - r["score"]) for r in mine]]
        colours = ["tab:orange" if r["side"] == "supervised" else "tab:blue" for r in mine]
        ax.bar(range(len(mine)), scores, yerr=errors, color=colours, capsize=4)
        ax.axhline(100 * base, color="grey", linestyle="--", label="base model")
        supervised_score = next((r["score"] for r in mine if r["side"] == "supervised"), None)
        if supervised_score is not None:
            ax.axhline(100 * supervised_score, color="tab:orange", linestyle=":", label="supervised (gold answers)")
        labels = [n.replace("taoflow ", "taoflow\n").replace(", ", ",\n").replace(" (", "\n(") for n in names]
        ax.set_xticks(range(len(mine)), labels, fontsize=7)
        ax.set_ylabel("held-out score, % (greedy, one evaluator)")
        ax.set_title(f"{task}: median of {mine[0]['runs']} seeds (bars: range)", fontsize=10)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle("taoflow without labels against LoRA fine-tuning on gold answers, SmolLM2-135M on CPU", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--tasks", choices=sorted(TASKS), nargs="*", default=["arithmetic", "json_extract", "capitals"])
    parser.add_argument("--labeled", type=int, default=32, help="L: the labeled prompts (and the flywheel's)")
    parser.add_argument("--rounds", type=int, default=3, help="K: successive rounds on the L prompts")
    parser.add_argument("--factor", type=int, default=4, help="the wide rounds' prompts: factor x L")
    parser.add_argument("--wide-rounds", type=int, default=3, help="successive rounds on the factor x L prompts")
    parser.add_argument("--heldout", type=int, default=48)
    parser.add_argument("--validation", type=int, default=64, help="the learning-rate sweep's and the gate's prompts")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--lrs", type=float, nargs="*", default=[3e-4, 1e-3, 3e-3])
    parser.add_argument(
        "--sides",
        nargs="*",
        choices=["supervised", "flywheel", "wide", "consensus"],
        default=["supervised", "flywheel", "wide", "consensus"],
        help="consensus: a judged task's rounds under taoflow's default scorer (self-consistency) instead of its judge",
    )
    parser.add_argument("--judge-url", help="a judged task's judge: a running server of the base model (default: "
                        "a vLLM CPU server started here)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], help="a settings override for the taoflow sides")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--replot", type=Path, help="only summarise and plot again from this csv")
    parser.add_argument("--answer-tokens", type=int, default=48, help="longest candidate, gate and evaluator answer")
    smoke_out = Path(tempfile.mkdtemp(prefix="taoflow-bench-supervised-smoke-"))  # never docs/ at the smoke size
    args = cli.parse(
        parser,
        argv,
        smoke={
            "tasks": ["capitals"],  # every path: the judge, its calibration, and consensus rounds that train
            "labeled": 6,
            "rounds": 2,
            "factor": 2,
            "wide_rounds": 1,
            "heldout": 4,
            "validation": 4,
            "seeds": [1],
            "lrs": [1e-3],
            "answer_tokens": 32,
            "out": smoke_out,
        },
    )
    args.out.mkdir(parents=True, exist_ok=True)
    table = args.out / "versus_supervised.csv"
    if not args.replot:
        work = Path(tempfile.mkdtemp(prefix="taoflow-bench-supervised-"))
        rows = [row for name in args.tasks for row in run_task(TASKS[name](), args, work / name)]
        with table.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in FIELDS})
    with (args.replot or table).open() as fh:
        rows = list(csv.DictReader(fh))
    summary = medians(rows)
    plot(summary, args.out / "versus_supervised.png")
    evaluator = f"greedy, {args.answer_tokens} tokens, the task's verifiers, {args.heldout} held-out prompts"
    print(f"\none evaluator: {evaluator}")
    for task in dict.fromkeys(r["task"] for r in summary):
        mine = [r for r in summary if r["task"] == task]
        best = next((r["lift"] for r in mine if r["side"] == "supervised"), float("nan"))
        print(f"\n{task} (median of {max(r['runs'] for r in mine)} seeds)")
        print(
            f"{'side':<22} {'score':>7} {'range':>13} {'lift':>7} {'x sup.':>6} {'prompts':>7} {'examples':>8} "
            f"{'cand. tok':>9} {'train tok':>9} {'s':>5}  lr"
        )
        for r in mine:
            ratio = r["lift"] / best if best > 0 and r["side"] != "base model" else float("nan")  # none under 0
            print(
                f"{r['side']:<22} {r['score']:>7.1%} {r['low']:>6.1%}-{r['high']:>6.1%} {r['lift']:>+7.1%} "
                f"{ratio:>6.2f} {r['prompts']:>7.0f} {r['examples']:>8.0f} {r['candidate_tokens']:>9.0f} "
                f"{r['training_tokens']:>9.0f} {r['seconds']:>5.0f}  {r['learning_rates']}"
            )
    print(f"\nwrote {table} and {args.out / 'versus_supervised.png'}")


if __name__ == "__main__":
    main()

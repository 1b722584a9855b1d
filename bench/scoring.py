"""Label-free scorers against the verifiers, and GRPO vs best-of-N SFT vs DPO, on a demo task, in one run.

    .venv/bin/python -m bench.scoring [--task arithmetic|json_extract] [--prompts 64] [--n 6] [--heldout 48]

Every side is one `taoflow round` process (its wall time and peak RSS measured with wait4) on the same
training prompts, from the same base model; the verifiers are hidden from the label-free rounds and used only to
measure. Sides:
- verifiers (reference): the task's verifiers (the demo's), best-of-N SFT (`threshold` selection);
- judge: the real small model served by a vLLM CPU server as a pointwise LLM judge, `relative` selection;
- reward_model: a reward model built from the small model, its head trained on pairs the verifier labelled
  (drawn from other problems than any side trains or is measured on), `relative` selection;
- self_certainty: the policy's own confidence, `relative` selection;
- dpo and grpo: the verifier as reward, the same prompts.
One evaluator judges every adapter and the base model: greedy `evaluate` with the task's verifiers on the same
held-out prompts no side trained on. Then the gate: an adapter trained on the base model's own answers picked at
random (no signal) against the base model, and the verifier round's adapter, both through `decide_gate` with the
default `gate.confidence` on those held-out prompts.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from bench.lib import cli
from bench.lib.tasks import TAOFLOW, TASKS, record
from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.connectors.protocols import SamplingConfig
from taoflow.connectors.training.lora import DistillExample, TrainingConfig, train_adapter
from taoflow.daemon.round.evaluation import evaluate, slices
from taoflow.daemon.round.parts import build_scorers, gate_policy, resolve_model
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.state import open_state
from taoflow.policies.gate import decide_gate


def config(work: Path, name: str, args, task, *, score, train) -> Path:
    data = {
        "model": {"served_name": "bench"},
        "storage": {"state_dir": str(work / name)},
        "ingest": {"heldout_fraction": 0.0, "heldout_max_per_task": 32},
        "generate": {"n": args.n, "max_prompts": args.prompts, "temperature": 0.7, "max_new_tokens": 32},
        "score": {"tasks": {task.name: score}},
        "train": {"lora_rank": 16, "epochs": args.epochs, "learning_rate": 1e-3, "batch_size": 8, **train},
        "gate": {"min_samples": min(16, args.gate_prompts), "max_new_tokens": 32},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_round(path: Path, task, train, gate_prompts) -> dict:
    """Seed the side's buffer, run `taoflow round` as its own process, and read what it recorded."""
    settings = load_settings(path)
    state = open_state(settings)
    state.buffer.add_many([(record(task, i, p), None) for i, p in enumerate(train)], source="bench")
    heldout = PromptBuffer(state.db, heldout_fraction=1.0, heldout_max_per_task=len(gate_prompts))
    heldout.add_many([(record(task, 1000 + i, p), None) for i, p in enumerate(gate_prompts)], source="bench")
    started = time.perf_counter()
    process = subprocess.Popen([str(TAOFLOW), "round", "--config", str(path), "--no-progress", "--no-promote"])
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    latest = RoundStore(state.db, state.rounds_dir).latest(settings.model.served_name)
    assert latest is not None, f"`taoflow round` recorded no round (exit {os.waitstatus_to_exitcode(status)})"
    adapter = state.store.fetch(latest.version) if latest.version else None
    state.close()
    summary = latest.summary
    return {
        "status": latest.status,
        "reason": latest.reason,
        "adapter": adapter,
        "seconds": seconds,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "examples": summary.train.examples if summary.train else None,
        "judges": summary.score.judges if summary.score else {},
        "exit": os.waitstatus_to_exitcode(status),
    }


def reward_model(base: Path, directory: Path, task, problems, *, steps: int) -> Path:
    """The small model with a head trained on verifier-labelled pairs of other problems
    (tests/support/reward_model.py)."""
    from tests.support.reward_model import train_reward_head

    rng = random.Random(99)
    pairs = [([{"role": "user", "content": task.prompt(p)}], task.right(p), task.wrong(p, rng)) for p in problems]
    return train_reward_head(base, directory, pairs, steps=steps)


def noise_adapter(base: Path, generator: TransformersGenerator, task, train, work: Path, *, epochs: float) -> Path:
    """An adapter trained on the base model's own sampled answers, one picked at random per prompt: no signal."""
    records = [record(task, i, p) for i, p in enumerate(train)]
    outputs = generator.generate([r.messages for r in records], SamplingConfig(n=4, temperature=0.7, max_new_tokens=32))
    rng = random.Random(5)
    examples = [DistillExample(r.messages, rng.choice(row).text) for r, row in zip(records, outputs, strict=True)]
    config = TrainingConfig(epochs=epochs, batch_size=8, learning_rate=1e-3)
    return train_adapter(base, examples, config, work_dir=work / "noise").adapter_dir


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--task", choices=sorted(TASKS), default="arithmetic")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--heldout", type=int, default=48)
    parser.add_argument("--gate-prompts", type=int, default=32, help="held-out prompts of each side's own gate")
    parser.add_argument("--reward-pairs", type=int, default=320, help="verifier-labelled pairs the reward head learns")
    parser.add_argument("--reward-steps", type=int, default=300, help="the reward head's training steps")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--only", help="comma-separated sides to run (default: all)")
    parser.add_argument(
        "--judge-url",
        help="an OpenAI-compatible server of the base model to judge with (default: a vLLM CPU server started here)",
    )
    args = cli.parse(
        parser,
        argv,
        smoke={
            "task": "json_extract",  # the base model solves some of these at any size: the rounds train
            "prompts": 6,
            "n": 4,
            "heldout": 4,
            "gate_prompts": 4,
            "reward_pairs": 8,
            "reward_steps": 10,
            "epochs": 1,
        },
    )
    work = Path(tempfile.mkdtemp(prefix="taoflow-bench-scoring-"))
    task = TASKS[args.task]()
    # The evaluator's verifier runs in this process: its own answers on a busy machine must not time out.
    base_settings = load_settings(
        None,
        storage={"state_dir": str(work / "eval")},
        score={"tasks": {task.name: task.verifier}, "sandbox": {"enabled": False}},
    )
    base = resolve_model(base_settings).path
    rng = random.Random(11)
    pairs = task.problems(rng)
    train, heldout = pairs[: args.prompts], pairs[200 : 200 + args.heldout]
    gate_prompts, rm_pairs = pairs[300 : 300 + args.gate_prompts], pairs[400 : 400 + args.reward_pairs]

    sides: dict[str, tuple[list, dict]] = {
        "verifiers": (task.verifier, {}),
        "judge": ([], {"selection": "relative", "relative_margin": 0.05}),
        "reward_model": ([], {"selection": "relative", "relative_margin": 0.1}),
        "self_certainty": ([{"type": "self_certainty"}], {"selection": "relative", "relative_margin": 0.1}),
        "dpo": (task.verifier, {"objective": "dpo", "dpo": {"margin": 0.5}, "learning_rate": 2e-4}),
        "grpo": (task.verifier, {"objective": "grpo", "grpo": {"generations": 4}, "relative_margin": 0.5, "epochs": 1}),
    }
    wanted = set(args.only.split(",")) if args.only else set(sides)
    server = None
    results = {}
    try:
        if "judge" in wanted:
            url = args.judge_url
            if url is None:
                from tests.support.servers import VllmServer

                server = VllmServer(base, work / "judge-server", core=1)
                server.start()
                server.wait_healthy()
                url = server.url
            judge = {"base_url": url.rstrip("/") + "/v1", "model": str(base), "rubric": task.rubric, "max_tokens": 40}
            sides["judge"] = ([{"type": "judge", "params": {**judge, "concurrency": 6}}], sides["judge"][1])
        if "reward_model" in wanted:
            started = time.perf_counter()
            directory = reward_model(base, work / "reward-model", task, rm_pairs, steps=args.reward_steps)
            seconds = time.perf_counter() - started
            print(f"reward model: head trained on {len(rm_pairs)} verifier-labelled pairs in {seconds:.0f} s")
            sides["reward_model"] = (
                [{"type": "reward_model", "params": {"model_dir": str(directory)}}],
                sides["reward_model"][1],
            )
        for name, (score, train_settings) in sides.items():
            if name in wanted:
                print(f"\n== {name}", flush=True)
                results[name] = run_round(
                    config(work, name, args, task, score=score, train=train_settings), task, train, gate_prompts
                )
    finally:
        if server is not None:  # stopped on every path, a failed start included
            server.stop()

    generator = TransformersGenerator(base, batch_rows=96)
    scorers = build_scorers(base_settings)
    shared = [record(task, 2000 + i, p) for i, p in enumerate(heldout)]

    def measure(adapter: Path | None):
        return evaluate(generator, shared, scorers, adapter=adapter, max_new_tokens=48)

    before = measure(None)
    print(
        f"\none evaluator: greedy, 48 tokens, the {task.name} verifiers, {len(shared)} held-out prompts; "
        f"base {before.mean(task.name):.1%}"
    )
    print(
        f"{'side':15} {'status':9} {'examples':>8} {'after':>7} {'lift':>8} {'wall s':>7} {'peak MiB':>9}  judge calls"
    )
    evaluations = {}
    for name, r in results.items():
        after = measure(r["adapter"]) if r["adapter"] else None
        evaluations[name] = after
        calls = sum(sum(j.get("calls", {}).values()) for j in r["judges"].values()) or "-"
        score = f"{after.mean(task.name):7.1%}" if after else "      -"
        lift = f"{(after.mean(task.name) - before.mean(task.name)) * 100:+7.1f}p" if after else "       -"
        timing = f"{r['seconds']:7.0f} {r['peak_rss_mib']:9.0f}"
        print(f"{name:15} {r['status']:9} {r['examples'] or 0:>8} {score} {lift} {timing}  {calls}")
        if r["status"] != "done":
            print(f"   {r['reason']}")

    noise = noise_adapter(base, generator, task, train, work, epochs=args.epochs)
    policy = gate_policy(load_settings(None))
    bar = f"confidence {policy.confidence}, min_mean_improvement {policy.min_mean_improvement}"
    print(f"\nthe gate ({bar}) on the held-out prompts:")
    for name, evaluation in [("noise adapter", measure(noise)), ("verifiers round", evaluations.get("verifiers"))]:
        if evaluation is None:
            continue
        decision = decide_gate(slices(evaluation, before), policy)
        print(f"  {name}: {'PASSED' if decision.passed else 'REJECTED'} ({decision.outcome}): {decision.reason}")


if __name__ == "__main__":
    main()

"""Label-free scorers against the verifiers, and GRPO vs best-of-N SFT vs DPO, on a demo task, in one run.

    .venv/bin/python bench/scoring.py [--task arithmetic|json_extract] [--prompts 64] [--n 6] [--heldout 48]

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

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.connectors.protocols import SamplingConfig
from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.training.lora import DistillExample, TrainingConfig, train_adapter
from taoflow.daemon.round.evaluation import evaluate, slices
from taoflow.daemon.round.parts import build_scorers, gate_policy, resolve_model
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.state import open_state
from taoflow.policies.gate import decide_gate

ROOT = Path(__file__).resolve().parent.parent
TAOFLOW = ROOT / ".venv" / "bin" / "taoflow"
NAMES = ["Anna", "Tom", "Omar", "Hana", "Lucas", "Maria", "Chloe", "Elena", "Priya", "Yusuf", "Li Wei", "Sven"]
JOBS = ["baker", "nurse", "dentist", "teacher", "farmer", "chef", "pilot", "engineer"]
CITIES = ["Cairo", "Quito", "Lisbon", "Oslo", "Perth", "Osaka", "Riga", "Lima"]


class Arithmetic:
    name = "arithmetic"
    rubric = "The answer must state the correct sum of the two numbers. A wrong or missing sum scores 0."

    def __init__(self) -> None:
        self.verifier = [{"type": "arithmetic"}]

    def problems(self, rng: random.Random) -> list:
        return list(dict.fromkeys((rng.randint(10, 99), rng.randint(10, 99)) for _ in range(2000)))

    def prompt(self, problem) -> str:
        return f"What is {problem[0]} + {problem[1]}?"

    def right(self, problem) -> str:
        return f"{problem[0]} + {problem[1]} = {problem[0] + problem[1]}"

    def wrong(self, problem, rng: random.Random) -> str:
        a, b = problem
        return rng.choice([f"{a} + {b} = {a + b + rng.randint(1, 20)}", f"It is {a * b}."])


class JsonExtract:
    name = "json_extract"
    rubric = (
        'The answer must be only a JSON object {"name": <the person\'s name>, "age": <their age as an integer>} with '
        "exactly the values in the text. Anything else, extra keys, prose or a wrong value scores 0."
    )

    def __init__(self) -> None:
        demo = load_settings(ROOT / "daemon" / "cli" / "samples" / "demo.yaml")
        self.verifier = [s.model_dump(mode="json") for s in demo.score.tasks["json_extract"]]

    def problems(self, rng: random.Random) -> list:
        draws = ((rng.choice(NAMES), rng.randint(18, 90), rng.choice(JOBS), rng.choice(CITIES)) for _ in range(4000))
        return list(dict.fromkeys(draws))

    def prompt(self, problem) -> str:
        name, age, job, city = problem
        return (
            'Extract the person\'s name and age from the text and reply with only a JSON object with keys "name" '
            f'(string) and "age" (integer).\n\nText: {name} is {age} years old and works as a {job} in {city}.'
        )

    def right(self, problem) -> str:
        return json.dumps({"name": problem[0], "age": problem[1]})

    def wrong(self, problem, rng: random.Random) -> str:
        name, age, job, city = problem
        return rng.choice(
            [
                json.dumps({"name": name, "age": age + rng.randint(1, 9)}),
                json.dumps({"name": name, "age": age, "job": job}),
                f"{name} is {age} years old.",
                json.dumps({"name": city, "age": age}),
            ]
        )


TASKS = {"arithmetic": Arithmetic, "json_extract": JsonExtract}


def record(task, i: int, problem) -> PromptRecord:
    return PromptRecord(f"bench-{i}", task.name, (Message("user", task.prompt(problem)),))


def config(work: Path, name: str, args, task, *, score, train) -> Path:
    data = {
        "model": {"served_name": "bench"},
        "storage": {"state_dir": str(work / name)},
        "ingest": {"heldout_fraction": 0.0, "heldout_max_per_task": 32},
        "generate": {"n": args.n, "max_prompts": args.prompts, "temperature": 0.7, "max_new_tokens": 32},
        "score": {"tasks": {task.name: score}},
        "train": {"lora_rank": 16, "epochs": 3, "learning_rate": 1e-3, "batch_size": 8, **train},
        "gate": {"min_samples": 16, "max_new_tokens": 32},
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
    row = state.db.query("SELECT status, reason, version, summary FROM rounds ORDER BY id DESC LIMIT 1")[0]
    summary = json.loads(row["summary"])
    adapter = state.store.fetch(row["version"]) if row["version"] else None
    state.close()
    return {
        "status": row["status"],
        "reason": row["reason"],
        "adapter": adapter,
        "seconds": seconds,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "examples": summary.get("train", {}).get("examples"),
        "judges": summary.get("score", {}).get("judges", {}),
        "exit": os.waitstatus_to_exitcode(status),
    }


def reward_model(base: Path, directory: Path, task, problems) -> Path:
    """The small model with a head trained on verifier-labelled pairs of other problems (tests/reward_model.py)."""
    from tests.reward_model import train_reward_head

    rng = random.Random(99)
    pairs = [([{"role": "user", "content": task.prompt(p)}], task.right(p), task.wrong(p, rng)) for p in problems]
    return train_reward_head(base, directory, pairs)


def noise_adapter(base: Path, generator: TransformersGenerator, task, train, work: Path) -> Path:
    """An adapter trained on the base model's own sampled answers, one picked at random per prompt: no signal."""
    records = [record(task, i, p) for i, p in enumerate(train)]
    outputs = generator.generate([r.messages for r in records], SamplingConfig(n=4, temperature=0.7, max_new_tokens=32))
    rng = random.Random(5)
    examples = [DistillExample(r.messages, rng.choice(row).text) for r, row in zip(records, outputs, strict=True)]
    config = TrainingConfig(epochs=3, batch_size=8, learning_rate=1e-3)
    return train_adapter(base, examples, config, work_dir=work / "noise").adapter_dir


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=sorted(TASKS), default="arithmetic")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--heldout", type=int, default=48)
    parser.add_argument("--only", help="comma-separated sides to run (default: all)")
    args = parser.parse_args()
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
    train, heldout, gate_prompts = pairs[: args.prompts], pairs[200 : 200 + args.heldout], pairs[300:332]
    rm_pairs = pairs[400:720]

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
            from tests.services import VllmServer

            server = VllmServer(base, work / "judge-server", core=1)
            server.start()
            server.wait_healthy()
            judge = {"base_url": server.url + "/v1", "model": str(base), "rubric": task.rubric, "max_tokens": 40}
            sides["judge"] = ([{"type": "judge", "params": {**judge, "concurrency": 6}}], sides["judge"][1])
        if "reward_model" in wanted:
            started = time.perf_counter()
            directory = reward_model(base, work / "reward-model", task, rm_pairs)
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

    noise = noise_adapter(base, generator, task, train, work)
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

"""taoflow's round against a naive hand-written TAO round, on 2-digit addition, in one run.

    .venv/bin/python -m bench.versus_naive [--train 96] [--heldout 32] [--n 8]

The reference: best-of-8 rejection-sampling SFT on 96 addition prompts, LoRA r16, 3 epochs,
with plain `model.generate` and a plain TRL SFTTrainer (no taoflow code on its path).
Then `TaoRound` with the same base model, the same 96 training prompts, 8 candidates per
prompt, LoRA r16 and 3 epochs (settings: bench/arithmetic.yaml), including its own gate.

One evaluator judges every side: the base model, the naive adapter and taoflow's adapter are
each scored by the same greedy `evaluate` (same generator, same arithmetic scorer, same token
budget) on the same 32 held-out prompts that no side trained on, so the "before" is one
number for both. It prints each side's lift and wall time, the ratios, and what differs
between the two recipes.
"""

from __future__ import annotations

import random
import re
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from bench.lib import cli
from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.round.evaluation import evaluate
from taoflow.daemon.round.parts import build_scorers, resolve_model
from taoflow.daemon.settings import Settings, load_settings
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.state import open_state
from taoflow.daemon.wiring import build_round

BENCH_DIR = Path(__file__).resolve().parent


def problems(rng: random.Random, count: int) -> list[tuple[int, int]]:
    return [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(count)]


def correct(a: int, b: int, text: str) -> bool:
    numbers = re.findall(r"-?\d+", text.replace(",", ""))
    return bool(numbers) and int(numbers[-1]) == a + b


#: What the naive recipe does, as the printout says it (taoflow's side comes from bench/arithmetic.yaml).
NAIVE = {
    "learning_rate": 2e-4,
    "targets_per_prompt": 1,
    "temperature": 1.0,
    "max_new_tokens": 64,
    "batch_size": 8,
    "epochs": 3.0,
}


def sample(model, tokenizer, pairs, *, n: int) -> list[list[str]]:
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"What is {a} + {b}?"}], tokenize=False, add_generation_prompt=True
        )
        for a, b in pairs
    ]
    out: list[list[str]] = []
    for start in range(0, len(prompts), 12):
        enc = tokenizer(prompts[start : start + 12], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(
                **enc,
                do_sample=True,
                temperature=NAIVE["temperature"],
                top_p=None,
                top_k=None,
                max_new_tokens=NAIVE["max_new_tokens"],
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(ids[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
        out += [texts[i : i + n] for i in range(0, len(texts), n)]
    return out


def naive_round(path: Path, train: list[tuple[int, int]], adapter_dir: Path, *, n: int) -> tuple[Path | None, float]:
    """Sample, keep the first correct answer per prompt, SFT a LoRA; the adapter is saved to `adapter_dir` (None:
    no sample was right, nothing to train on)."""
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rows = []
    torch.manual_seed(0)
    for (a, b), candidates in zip(train, sample(model, tokenizer, train, n=n), strict=True):
        good = [c for c in candidates if correct(a, b, c)]
        if good:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
                    "completion": [{"role": "assistant", "content": good[0]}],
                }
            )
    tokenizer.padding_side = "right"
    if not rows:
        print(f"naive round: no right answer among {len(train)} prompts x {n} samples: nothing to train on")
        return None, time.perf_counter() - started
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            num_train_epochs=NAIVE["epochs"],
            per_device_train_batch_size=NAIVE["batch_size"],
            learning_rate=NAIVE["learning_rate"],
            bf16=False,
            gradient_checkpointing=False,
            report_to=[],
            save_strategy="no",
            disable_tqdm=True,
            dataloader_pin_memory=False,
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM"),
        )
        trainer.train()
    trainer.model.save_pretrained(adapter_dir)
    print(f"naive round: {len(rows)} training examples from {len(train)} prompts x {n} samples")
    return adapter_dir, time.perf_counter() - started


def record(i: int, a: int, b: int) -> PromptRecord:
    return PromptRecord(f"bench-{i}", "arithmetic", (Message("user", f"What is {a} + {b}?"),))


def taoflow_round(settings: Settings, train, extra, work: Path) -> tuple[Path | None, float]:
    """The round as the daemon runs it; its buffer holds the training prompts plus prompts for its own gate."""
    started = time.perf_counter()
    state = open_state(settings)
    # Its own held-out split comes from `extra` only: the training prompts go in with no hold-out.
    state.buffer.add_many([(record(i, a, b), None) for i, (a, b) in enumerate(train)], source="bench")
    all_heldout = PromptBuffer(state.db, heldout_fraction=1.0, heldout_max_per_task=len(extra))
    all_heldout.add_many([(record(1000 + i, a, b), None) for i, (a, b) in enumerate(extra)], source="bench")
    done = build_round(settings, state).run()
    seconds = time.perf_counter() - started
    if done.summary.gate is None or done.version is None:
        print(f"taoflow round: {done.status}: {done.reason}")
        return None, seconds
    gate = done.summary.gate.slices[0]
    examples = done.summary.train.examples if done.summary.train else 0
    print(
        f"taoflow round: {examples} training examples; its own gate "
        f"{gate.champion_mean:.1%} -> {gate.candidate_mean:.1%} on {gate.n} prompts"
    )
    return state.store.fetch(done.version), seconds


def judge(
    path: Path, heldout, adapters: dict[str, Path | None], *, settings: Settings, tokens: int
) -> dict[str, float]:
    """Every side through one evaluator: the same generator, scorer, prompts and token budget (`tokens`: the
    longer of the two recipes' answers, so a verbose but correct answer is not cut off before its number)."""
    generator = TransformersGenerator(path, batch_rows=settings.generate.batch_rows)
    shared = [record(2000 + i, a, b) for i, (a, b) in enumerate(heldout)]
    scorers = build_scorers(settings)
    return {
        name: evaluate(generator, shared, scorers, adapter=adapter, max_new_tokens=tokens).mean("arithmetic")
        for name, adapter in adapters.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--train", type=int, default=96, help="training prompts (both recipes)")
    parser.add_argument("--heldout", type=int, default=32, help="the evaluator's prompts")
    parser.add_argument("--gate-prompts", type=int, default=32, help="taoflow's own gate's prompts")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt (both recipes)")
    parser.add_argument("--epochs", type=float, default=3.0, help="training epochs (both recipes)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the naive recipe's longest sample")
    parser.add_argument("--taoflow-max-new-tokens", type=int, help="taoflow's (default: bench/arithmetic.yaml's)")
    args = cli.parse(
        parser,
        argv,
        smoke={
            "train": 6,
            "heldout": 4,
            "gate_prompts": 4,
            "n": 4,
            "epochs": 1.0,
            "max_new_tokens": 32,
            "taoflow_max_new_tokens": 32,
        },
    )
    NAIVE["max_new_tokens"], NAIVE["epochs"] = args.max_new_tokens, args.epochs
    work = Path(tempfile.mkdtemp(prefix="taoflow-bench-"))
    tokens = {"max_new_tokens": args.taoflow_max_new_tokens} if args.taoflow_max_new_tokens else {}
    settings = load_settings(
        BENCH_DIR / "arithmetic.yaml",
        storage={"state_dir": str(work / "state")},
        generate={"n": args.n, "max_prompts": args.train, **tokens},
        train={"epochs": args.epochs},
        gate={"min_samples": min(16, args.gate_prompts), **tokens},
    )
    path = resolve_model(settings).path
    rng = random.Random(7)
    pairs = list(dict.fromkeys(problems(rng, 400)))
    train = pairs[: args.train]
    heldout = pairs[args.train : args.train + args.heldout]
    extra = pairs[args.train + args.heldout : args.train + args.heldout + args.gate_prompts]
    naive_adapter, naive_s = naive_round(path, train, work / "naive-adapter", n=args.n)
    taoflow_adapter, taoflow_s = taoflow_round(settings, train, extra, work)
    tokens = max(NAIVE["max_new_tokens"], settings.generate.max_new_tokens, settings.gate.max_new_tokens)
    sides = {"base": None, "naive": naive_adapter, "taoflow": taoflow_adapter}
    scores = judge(path, heldout, sides, settings=settings, tokens=tokens)
    before = scores["base"]
    print(
        f"\n{'round':8} {'before':>7} {'after':>7} {'lift':>8} {'wall s':>7}   (one evaluator: greedy, {tokens} tokens)"
    )
    for name, seconds in (("naive", naive_s), ("taoflow", taoflow_s)):
        after = scores[name]
        print(f"{name:8} {before:7.1%} {after:7.1%} {(after - before) * 100:+7.1f}p {seconds:7.0f}")
    naive_lift, taoflow_lift = scores["naive"] - before, scores["taoflow"] - before
    ratio = f"x{taoflow_lift / naive_lift:.2f}" if naive_lift > 0 else "n/a (the naive round lifted nothing)"
    wall = f"wall time x{taoflow_s / naive_s:.2f}"
    print(f"taoflow / naive on the same {len(heldout)} held-out prompts: lift {ratio}, {wall}")
    t, g = settings.train, settings.generate
    print(
        "what differs: naive "
        f"lr {NAIVE['learning_rate']:g}, {NAIVE['targets_per_prompt']} target per prompt (the first correct), "
        f"temperature {NAIVE['temperature']}, {NAIVE['max_new_tokens']} new tokens, batch {NAIVE['batch_size']}, "
        "plain model.generate; taoflow "
        f"lr {t.learning_rate:g}, up to {t.targets_per_prompt} distinct targets per prompt (shorter first), "
        f"temperature {g.temperature}, {g.max_new_tokens} new tokens, batch {t.batch_size}, "
        "candidates sharing their prompt's KV cache"
    )


if __name__ == "__main__":
    main()

"""taoflow's round against a naive hand-written TAO round, on 2-digit addition, in one run.

    .venv/bin/python bench/versus_naive.py

The reference: best-of-8 rejection-sampling SFT on 96 addition prompts, LoRA r16, 3 epochs,
with plain `model.generate` and a plain TRL SFTTrainer (no taoflow code on its path).
Then `TaoRound` with the same base model, the same 96 training prompts, 8 candidates per
prompt, LoRA r16 and 3 epochs (settings: bench/arithmetic.yaml), including its own gate.
Both adapters are finally scored greedily on the same 32 held-out prompts that neither
saw. It prints each side's lift and wall time, and the ratios.
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

from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.round.evaluation import evaluate
from taoflow.daemon.round.parts import build_scorers, resolve_model
from taoflow.daemon.round.recipe import TaoRound
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.state import open_state

BENCH = Path(__file__).resolve().parent


def problems(rng: random.Random, count: int) -> list[tuple[int, int]]:
    return [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(count)]


def correct(a: int, b: int, text: str) -> bool:
    numbers = re.findall(r"-?\d+", text.replace(",", ""))
    return bool(numbers) and int(numbers[-1]) == a + b


def generate(model, tokenizer, pairs, *, n: int, sample: bool) -> list[list[str]]:
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
                do_sample=sample,
                temperature=1.0 if sample else None,
                top_p=None,
                top_k=None,
                max_new_tokens=64,
                num_return_sequences=n,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(ids[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
        out += [texts[i : i + n] for i in range(0, len(texts), n)]
    return out


def accuracy(model, tokenizer, pairs) -> float:
    answers = generate(model, tokenizer, pairs, n=1, sample=False)
    return sum(correct(a, b, row[0]) for (a, b), row in zip(pairs, answers, strict=True)) / len(pairs)


def naive_round(path, train, heldout) -> tuple[float, float, float]:
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    before = accuracy(model, tokenizer, heldout)
    rows = []
    torch.manual_seed(0)
    for (a, b), candidates in zip(train, generate(model, tokenizer, train, n=8, sample=True), strict=True):
        good = [c for c in candidates if correct(a, b, c)]
        if good:
            rows.append(
                {
                    "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
                    "completion": [{"role": "assistant", "content": good[0]}],
                }
            )
    tokenizer.padding_side = "right"
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            num_train_epochs=3,
            per_device_train_batch_size=8,
            learning_rate=2e-4,
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
    tokenizer.padding_side = "left"
    after = accuracy(trainer.model.eval(), tokenizer, heldout)
    print(f"naive round: {len(rows)} training examples from {len(train)} prompts x 8 samples")
    return before, after, time.perf_counter() - started


def record(i: int, a: int, b: int) -> PromptRecord:
    return PromptRecord(f"bench-{i}", "arithmetic", (Message("user", f"What is {a} + {b}?"),))


def taoflow_round(train, extra, heldout, work: Path) -> tuple[float, float, float]:
    """The round as the daemon runs it; its buffer holds the training prompts plus prompts for its own gate."""
    started = time.perf_counter()
    settings = load_settings(BENCH / "arithmetic.yaml", storage={"state_dir": str(work)})
    state = open_state(settings)
    # Its own held-out split comes from `extra` only: the training prompts go in with no hold-out.
    state.buffer.add_many([(record(i, a, b), None) for i, (a, b) in enumerate(train)], source="bench")
    all_heldout = PromptBuffer(state.db, heldout_fraction=1.0, heldout_max_per_task=len(extra))
    all_heldout.add_many([(record(1000 + i, a, b), None) for i, (a, b) in enumerate(extra)], source="bench")
    generators = {}

    def factory(path: Path) -> TransformersGenerator:
        generators["g"] = TransformersGenerator(path, batch_rows=settings.generate.batch_rows)
        return generators["g"]

    done = TaoRound(settings, state, scorers=build_scorers(settings), generator_factory=factory).run()
    seconds = time.perf_counter() - started
    gate = done.summary["gate"]["slices"][0]
    print(
        f"taoflow round: {done.summary['train']['examples']} training examples; its own gate "
        f"{gate['champion_mean']:.1%} -> {gate['candidate_mean']:.1%} on {gate['n']} prompts"
    )
    shared = [record(2000 + i, a, b) for i, (a, b) in enumerate(heldout)]
    scorers = build_scorers(settings)
    tokens = settings.gate.max_new_tokens
    base = evaluate(generators["g"], shared, scorers, adapter=None, max_new_tokens=tokens)
    tuned = evaluate(generators["g"], shared, scorers, adapter=state.store.fetch(done.version), max_new_tokens=tokens)
    return base.mean("arithmetic"), tuned.mean("arithmetic"), seconds


def main() -> None:
    path = resolve_model(load_settings(BENCH / "arithmetic.yaml")).path
    rng = random.Random(7)
    pairs = list(dict.fromkeys(problems(rng, 400)))
    train, heldout, extra = pairs[:96], pairs[96:128], pairs[128:160]
    rows = [("naive", *naive_round(path, train, heldout))]
    work = Path(tempfile.mkdtemp(prefix="taoflow-bench-"))
    rows.append(("taoflow", *taoflow_round(train, extra, heldout, work)))
    print(f"\n{'round':8} {'before':>7} {'after':>7} {'lift':>8} {'wall s':>7}   (same 32 held-out prompts, greedy)")
    for name, before, after, seconds in rows:
        print(f"{name:8} {before:7.1%} {after:7.1%} {(after - before) * 100:+7.1f}p {seconds:7.0f}")
    (_, nb, na, ns), (_, tb, ta, ts) = rows
    print(f"taoflow / naive: lift x{(ta - tb) / max(na - nb, 1e-9):.2f}, wall time x{ts / ns:.2f}")


if __name__ == "__main__":
    main()

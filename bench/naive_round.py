"""The reference to beat: a naive hand-written TAO round on 2-digit addition.

    .venv/bin/python bench/naive_round.py

Best-of-8 rejection-sampling SFT on 96 addition prompts, LoRA r16, 3 epochs, with plain
`model.generate` and a plain TRL SFTTrainer: no taoflow code on the hot path. It prints
the held-out greedy accuracy before and after and the wall time, to compare with the
arithmetic row and the total time of `taoflow demo` on the same machine.
"""

from __future__ import annotations

import random
import re
import tempfile
import time

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from taoflow.daemon.demo import SAMPLES
from taoflow.daemon.settings import load_settings
from taoflow.daemon.wiring import resolve_model


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


def main() -> None:
    started = time.perf_counter()
    path = resolve_model(load_settings(SAMPLES / "demo.yaml")).path
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    rng = random.Random(7)
    train, heldout = problems(rng, 96), problems(rng, 32)
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
    seconds = time.perf_counter() - started
    print(f"naive round: {len(rows)} training examples from 96 prompts x 8 samples")
    print(
        f"held-out greedy accuracy {before:.1%} -> {after:.1%} ({(after - before) * 100:+.1f} points) "
        f"in {seconds:.0f} s wall time"
    )


if __name__ == "__main__":
    main()

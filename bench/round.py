"""Round throughput: the round's generation against the raw backend, and training samples/s.

    .venv/bin/python -m bench.round [--prompts 32] [--n 8] [--max-new-tokens 48] [--device auto] [--dtype auto]
                                      [--train-dtypes float32,bfloat16]

On a GPU (`--device auto` finds it) the same command measures the GPU path: generation in the placement's dtype,
the GPU's utilisation during each generation phase (sampled from nvidia-smi), and training in each of
--train-dtypes (default on a GPU: bfloat16 then float32; on the CPU: float32).

Both generation measurements sample the same prompts with the same settings in the same
process: the reference is one plain `model.generate(num_return_sequences=n)` call per
batch of the same number of rows. The printed ratio is round tokens/s over raw tokens/s
(above 1: the round's generator is faster than the raw backend). Training is measured on
the round's own training path (TRL SFT + LoRA) over the candidates that passed.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import torch

from bench.lib import cli
from bench.lib.tasks import demo_prompts
from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.connectors.generation.placement import Placement, resolve_placement
from taoflow.connectors.protocols import SamplingConfig
from taoflow.connectors.training.lora import DistillExample, TrainingConfig, train_adapter
from taoflow.daemon.cli.demo import SAMPLES
from taoflow.daemon.round.parts import build_scorers, resolve_model
from taoflow.daemon.settings import load_settings


def raw_generate(generator: TransformersGenerator, records: list, sampling: SamplingConfig) -> tuple[int, float]:
    """The reference: HF generate over the same prompts, batch by batch, counting tokens up to EOS."""
    tokenizer, model = generator.tokenizer, generator._base
    texts = sorted((generator._render(r.messages) for r in records), key=len)
    per_batch = max(1, generator.batch_rows // sampling.n)
    tokens, started = 0, time.perf_counter()
    torch.manual_seed(sampling.seed)
    for start in range(0, len(texts), per_batch):
        enc = tokenizer(texts[start : start + per_batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(generator.device)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_new_tokens=sampling.max_new_tokens,
                num_return_sequences=sampling.n,
                pad_token_id=tokenizer.pad_token_id,
            )
        generated = out[:, enc.input_ids.shape[1] :]
        for row in generated.tolist():
            tokens += next((i + 1 for i, t in enumerate(row) if t in generator._eos_ids), len(row))
    return tokens, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--train-dtypes", default="", help="comma-separated; default: bfloat16,float32 on a GPU")
    args = cli.parse(parser, argv, smoke={"prompts": 4, "n": 2, "max_new_tokens": 8, "epochs": 1.0})

    settings = load_settings(SAMPLES / "demo.yaml")
    base = resolve_model(settings)
    placement = resolve_placement(args.device, args.dtype)
    generator = TransformersGenerator(base.path, batch_rows=settings.generate.batch_rows, placement=placement)
    records = demo_prompts(args.prompts)
    sampling = SamplingConfig(n=args.n, temperature=0.7, max_new_tokens=args.max_new_tokens, seed=1)
    print(
        f"{len(records)} prompts x {args.n} candidates, max {args.max_new_tokens} new tokens, "
        f"{placement.device} {placement.dtype}, {torch.get_num_threads()} CPU threads"
    )

    with GpuUtilisation(placement) as raw_util:
        raw_tokens, raw_seconds = raw_generate(generator, records, sampling)
    with GpuUtilisation(placement) as round_util:
        started = time.perf_counter()
        outputs = generator.generate([r.messages for r in records], sampling)
        round_seconds = time.perf_counter() - started
    round_tokens = sum(c.num_tokens for row in outputs for c in row)
    raw_rate, round_rate = raw_tokens / raw_seconds, round_tokens / round_seconds
    print(f"raw model.generate : {raw_tokens:6d} tokens in {raw_seconds:6.1f} s = {raw_rate:6.1f} tokens/s")
    print(f"round generator    : {round_tokens:6d} tokens in {round_seconds:6.1f} s = {round_rate:6.1f} tokens/s")
    print(f"ratio round/raw    : {round_rate / raw_rate:.2f}x tokens/s, {raw_seconds / round_seconds:.2f}x wall time")
    if placement.on_accelerator:
        print(f"GPU utilisation    : raw {raw_util.summary()}, round {round_util.summary()}")
    generator.close()

    scorers = build_scorers(settings)
    examples = []
    for record, row in zip(records, outputs, strict=True):
        scores = scorers.for_task(record.task).score(record, [c.text for c in row])
        best = max(zip(scores, row, strict=True), key=lambda pair: pair[0] or 0.0)
        examples.append(DistillExample(record.messages, best[1].text))  # every prompt: a fixed-size workload
    default = "bfloat16,float32" if placement.on_accelerator else placement.dtype
    for dtype in (args.train_dtypes or default).split(","):
        config = TrainingConfig(
            epochs=args.epochs, batch_size=16, save_steps=10_000, device=placement.device, dtype=dtype
        )
        with tempfile.TemporaryDirectory() as work:
            result = train_adapter(base.path, examples, config, work_dir=Path(work))
        print(
            f"training (SFT, LoRA r{config.lora_rank}, {dtype}): {result.samples_seen} samples in "
            f"{result.seconds:.1f} s = {result.samples_per_second:.2f} samples/s"
        )


class GpuUtilisation:
    """Samples `nvidia-smi` utilisation and memory every 0.2 s inside the block (nothing on the CPU)."""

    def __init__(self, placement: Placement) -> None:
        self._on = placement.on_accelerator and shutil.which("nvidia-smi") is not None
        self._index = placement.device.partition(":")[2] or "0"
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> GpuUtilisation:
        if self._on:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._on:
            self._thread.join()

    def _poll(self) -> None:
        query = [
            "nvidia-smi",
            "-i",
            self._index,
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]
        while not self._stop.wait(0.2):
            try:
                out = subprocess.run(query, capture_output=True, text=True, check=False, timeout=5).stdout.strip()
            except subprocess.TimeoutExpired:
                continue
            if out:
                util, memory = (float(v) for v in out.split(","))
                self._samples.append((util, memory))

    def summary(self) -> str:
        if not self._samples:
            return "no samples"
        utils = [u for u, _ in self._samples]
        return (
            f"mean {statistics.mean(utils):.0f}% (max {max(utils):.0f}%), "
            f"peak memory {max(m for _, m in self._samples):.0f} MiB"
        )


if __name__ == "__main__":
    main()

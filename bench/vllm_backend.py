"""The `vllm` generation backend against the `transformers` one: the same prompts, sampling and model, same run.

    .venv/bin/python -m bench.vllm_backend [--prompts 32] [--n 8] [--max-new-tokens 48] [--python .venv-vllm/bin/python]

Each side is built the way a round builds it (`build_generator`), then generates the round's candidates (n per
prompt, temperature 0.7) and the gate's greedy answers (one per prompt) for the demo's prompts. The vLLM side runs
in the interpreter that has vLLM (here its CPU build in .venv-vllm, as ENVIRONMENT.md sets it up; on a GPU node the
train image, where `--python` is this interpreter). Printed: tokens/s of each phase on each side and the ratios;
the engine's start is reported apart from the generation it serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.lib import cli
from bench.lib.tasks import demo_prompts
from taoflow.connectors.protocols import SamplingConfig
from taoflow.daemon.cli.demo import SAMPLES
from taoflow.daemon.round.parts import resolve_model
from taoflow.daemon.settings import load_settings
from taoflow.daemon.wiring import build_generator

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--python", default=str(ROOT / ".venv-vllm" / "bin" / "python"))
    parser.add_argument("--dtype", default="auto", help="model.dtype on both sides")
    args = cli.parse(parser, argv, smoke={"prompts": 2, "n": 2, "max_new_tokens": 8})
    settings = load_settings(SAMPLES / "demo.yaml", model={"dtype": args.dtype})
    base = resolve_model(settings)
    records = demo_prompts(args.prompts)
    sampling = SamplingConfig(n=args.n, temperature=0.7, max_new_tokens=args.max_new_tokens, seed=1)
    greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=args.max_new_tokens)

    sides: dict[str, dict] = {}
    started = time.perf_counter()
    generator = build_generator(settings, base.path)
    sides["transformers"] = {"engine_seconds": round(time.perf_counter() - started, 1)}
    for name, params in (("candidates", sampling), ("greedy", greedy)):
        started = time.perf_counter()
        rows = generator.generate([r.messages for r in records], params)
        seconds = time.perf_counter() - started
        sides["transformers"][name] = {"tokens": sum(c.num_tokens for row in rows for c in row), "seconds": seconds}
    generator.close()

    with tempfile.TemporaryDirectory() as work:
        job = Path(work) / "job.json"
        job.write_text(
            json.dumps(
                {
                    "model_dir": str(base.path),
                    "model": {"dtype": args.dtype},
                    "generate": {"seed": 1, "vllm": {"max_model_len": 1024}},
                    "conversations": [[m.as_dict() for m in r.messages] for r in records],
                    "sampling": sampling.__dict__,
                    "greedy": greedy.__dict__,
                }
            )
        )
        env = {"VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1", "TMPDIR": work, **os.environ}
        run = subprocess.run(
            [args.python, str(ROOT / "bench" / "lib" / "vllm_driver.py"), str(job)],
            capture_output=True,
            text=True,
            env=env,
            cwd=work,
            check=False,
            timeout=1800,  # an engine that hangs ends the bench instead of holding it forever
        )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if run.returncode != 0 or not lines:
        sys.exit(f"the vLLM side failed ({run.returncode}):\n{run.stderr[-3000:]}")
    sides["vllm"] = json.loads(lines[-1].removeprefix("RESULT "))

    print(
        f"{len(records)} prompts, candidates n={args.n} at temperature 0.7, greedy n=1, "
        f"max {args.max_new_tokens} tokens"
    )
    for side, data in sides.items():
        print(f"{side:>12}: model/engine ready in {data['engine_seconds']:.1f} s")
    for phase in ("candidates", "greedy"):
        rates = {}
        for side, data in sides.items():
            tokens, seconds = data[phase]["tokens"], data[phase]["seconds"]
            rates[side] = tokens / seconds
            print(f"{phase:>10} {side:>12}: {tokens:6d} tokens in {seconds:6.1f} s = {rates[side]:7.1f} tokens/s")
        print(f"{phase:>10} ratio vllm/transformers: x{rates['vllm'] / rates['transformers']:.2f} tokens/s")


if __name__ == "__main__":
    main()

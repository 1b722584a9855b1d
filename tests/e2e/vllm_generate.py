"""Runs the `vllm` generation backend inside the vLLM virtualenv (.venv-vllm) as a round would, and prints what it
did as JSON: candidates and greedy answers for the base model and two adapters, the gate's evaluation of both
adapters, all through one engine, then the engine shut down.

.venv-vllm/bin/python tests/e2e/vllm_generate.py MODEL_DIR ADAPTER_DIR OTHER_ADAPTER_DIR
"""

import json
import multiprocessing
import sys
import time
from pathlib import Path

from taoflow.connectors.protocols import SamplingConfig
from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.round.evaluation import evaluate
from taoflow.daemon.round.parts import build_scorers
from taoflow.daemon.settings import load_settings
from taoflow.daemon.wiring import build_generator


def main() -> None:
    model, adapter, other = (Path(a) for a in sys.argv[1:4])
    settings = load_settings(
        None,
        model={"dtype": "float32"},
        generate={"backend": "vllm", "seed": 0, "vllm": {"max_model_len": 512}},
        score={"tasks": {"math": [{"type": "arithmetic"}]}, "sandbox": {"enabled": False}},
    )
    started = time.perf_counter()
    generator = build_generator(settings, model)
    result: dict = {"engine_seconds": round(time.perf_counter() - started, 1), "engines": _engine_processes()}
    prompts = [[Message("user", "What is 12 + 30?")], [Message("user", "What is 41 + 7?")]]
    for name, path in (("base", None), ("adapter", adapter)):
        sampled = generator.generate(prompts, SamplingConfig(n=3, temperature=0.8, max_new_tokens=16), adapter=path)
        greedy = generator.generate(prompts, SamplingConfig(n=2, max_new_tokens=16), adapter=path)
        result[name] = {
            "sampled": [[c.__dict__ for c in row] for row in sampled],
            "greedy": [[c.text for c in row] for row in greedy],
        }
    # The gate: champion (adapter) and candidate (other) judged through the same engine.
    records = [PromptRecord(f"q{i}", "math", (Message("user", f"What is {10 + i} + {20 + i}?"),)) for i in range(8)]
    scorers = build_scorers(settings)
    result["gate"] = {
        side: evaluate(generator, records, scorers, adapter=path, max_new_tokens=24).scores["math"]
        for side, path in (("champion", adapter), ("candidate", other))
    }
    generator.close()
    result["engines_after_close"] = _engine_processes()
    print("RESULT " + json.dumps(result))


def _engine_processes() -> int:
    """vLLM's engine runs in child processes of this one: alive while the engine is, gone once it is shut down."""
    return len(multiprocessing.active_children())


if __name__ == "__main__":  # vLLM's engine process is spawned: the main module must be importable
    main()

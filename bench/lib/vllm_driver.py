"""The vLLM side of bench/vllm_backend.py (a program, not a benchmark), run by the Python that has vLLM (.venv-vllm
here, the train image on GPU nodes): one engine built as a round builds it, candidates then greedy evaluation,
timed; prints one JSON line.

    PYTHON bench/lib/vllm_driver.py JOB.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from taoflow.connectors.protocols import SamplingConfig
from taoflow.connectors.records import Message
from taoflow.daemon.settings import load_settings
from taoflow.daemon.wiring import build_generator


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    settings = load_settings(None, generate={"backend": "vllm", **job["generate"]}, model=job["model"])
    started = time.perf_counter()
    generator = build_generator(settings, Path(job["model_dir"]))
    result = {"engine_seconds": round(time.perf_counter() - started, 1)}
    conversations = [[Message(m["role"], m["content"]) for m in c] for c in job["conversations"]]
    for name, sampling in (
        ("candidates", SamplingConfig(**job["sampling"])),
        ("greedy", SamplingConfig(**job["greedy"])),
    ):
        started = time.perf_counter()
        rows = generator.generate(conversations, sampling)
        seconds = time.perf_counter() - started
        # Greedy rows repeat one answer n times; count the answer once.
        tokens = sum(c.num_tokens for row in rows for c in (row[:1] if name == "greedy" else row))
        result[name] = {"tokens": tokens, "seconds": seconds}
    generator.close()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":  # vLLM spawns its engine process: the main module must be importable
    main()

"""Runs VllmGenerator inside the vLLM virtualenv (.venv-vllm) and prints its completions as JSON.

.venv-vllm/bin/python tests/e2e/vllm_generate.py MODEL_DIR ADAPTER_DIR
"""

import json
import sys
from pathlib import Path

from taoflow.connectors.generation.vllm import VllmGenerator
from taoflow.connectors.protocols import SamplingConfig
from taoflow.connectors.records import Message


def main() -> None:
    model, adapter = Path(sys.argv[1]), Path(sys.argv[2])
    generator = VllmGenerator(model, max_lora_rank=16, seed=0, dtype="float32", max_model_len=512)
    prompts = [[Message("user", "What is 12 + 30?")], [Message("user", "What is 41 + 7?")]]
    result = {}
    for name, path in (("base", None), ("adapter", adapter)):
        sampled = generator.generate(prompts, SamplingConfig(n=3, temperature=0.8, max_new_tokens=16), adapter=path)
        greedy = generator.generate(prompts, SamplingConfig(n=1, max_new_tokens=16), adapter=path)
        result[name] = {
            "sampled": [[c.__dict__ for c in row] for row in sampled],
            "greedy": [r[0].text for r in greedy],
        }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":  # vLLM's engine process is spawned: the main module must be importable
    main()

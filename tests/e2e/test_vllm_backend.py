"""The vLLM offline-engine backend, run in its own virtualenv (scripts/setup-vllm.sh), with a real adapter."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from taoflow.connectors.records import Message
from taoflow.connectors.training.lora import DistillExample, TrainingConfig, train_adapter

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


def test_vllm_generator_samples_n_and_applies_the_adapter(tmp_path, base_model):
    assert VLLM_PYTHON.exists(), "run scripts/setup-vllm.sh first (.ci/run does)"
    # An adapter that has learnt one fact by heart, so that its effect is unmistakable.
    examples = [DistillExample((Message("user", "What is 12 + 30?"),), "The answer is 42, my friend.")] * 8
    config = TrainingConfig(epochs=6, batch_size=4, learning_rate=3e-3, save_steps=1000)
    adapter = train_adapter(base_model.path, examples, config, work_dir=tmp_path).adapter_dir
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    run = subprocess.run(
        [str(VLLM_PYTHON), str(ROOT / "tests" / "e2e" / "vllm_generate.py"), str(base_model.path), str(adapter)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=tmp_path,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stdout[-2000:] + run.stderr[-4000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    for side in ("base", "adapter"):
        assert [len(row) for row in result[side]["sampled"]] == [3, 3]
        assert all(c["num_tokens"] > 0 for row in result[side]["sampled"] for c in row)
    assert "42, my friend" in result["adapter"]["greedy"][0]
    assert "my friend" not in result["base"]["greedy"][0]

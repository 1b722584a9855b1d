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


def test_one_vllm_engine_generates_and_evaluates_the_gate_and_is_shut_down(tmp_path, base_model):
    assert VLLM_PYTHON.exists(), "run scripts/setup-vllm.sh first (.ci/run does)"
    # Adapters that have learnt one fact by heart each, so that their effect is unmistakable.
    adapters = []
    for name, fact in (("a", "The answer is 42, my friend."), ("b", "Forty-two, dear reader.")):
        examples = [DistillExample((Message("user", "What is 12 + 30?"),), fact)] * 8
        config = TrainingConfig(epochs=6, batch_size=4, learning_rate=3e-3, save_steps=1000)
        adapters.append(train_adapter(base_model.path, examples, config, work_dir=tmp_path / name).adapter_dir)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    script = ROOT / "tests" / "e2e" / "vllm_generate.py"
    run = subprocess.run(
        [str(VLLM_PYTHON), str(script), str(base_model.path), *(str(a) for a in adapters)],
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
        # Greedy with n > 1 (which vLLM refuses) is asked once and repeated.
        assert all(len(row) == 2 and row[0] == row[1] for row in result[side]["greedy"])
    assert "42, my friend" in result["adapter"]["greedy"][0][0]
    assert "my friend" not in result["base"]["greedy"][0][0]
    # The gate's two sides went through the same engine, each with its own adapter, every answer scored.
    assert [len(result["gate"][side]) for side in ("champion", "candidate")] == [8, 8]
    assert result["engines"] >= 1 and result["engines_after_close"] == 0

"""LoRA training on the real model: both objectives, and resumption from a checkpoint."""

import json
from dataclasses import replace

import pytest

from taoflow.connectors.artifacts.local import check_adapter_dir
from taoflow.connectors.records import Message
from taoflow.connectors.training.lora import DistillExample, PreferenceExample, TrainingConfig, train_adapter

pytestmark = pytest.mark.slow

PROMPTS = [
    (Message("user", f"What is {a} + {b}?"),) for a, b in [(12, 30), (41, 7), (25, 25), (60, 19), (33, 44), (8, 80)]
]


def distill() -> list[DistillExample]:
    return [DistillExample(p, str(eval(p[0].content[8:-1]))) for p in PROMPTS]


def test_sft_writes_a_peft_adapter_and_lowers_the_loss(tmp_path, base_model):
    config = TrainingConfig(epochs=4, batch_size=3, learning_rate=2e-3, save_steps=100, lora_rank=8, lora_alpha=16)
    result = train_adapter(base_model.path, distill(), config, work_dir=tmp_path)
    adapter_config = check_adapter_dir(result.adapter_dir)
    assert adapter_config["r"] == 8
    assert set(adapter_config["target_modules"]) >= {"q_proj", "v_proj"}
    assert result.steps == 8
    losses = [e["loss"] for e in result.log if "loss" in e]
    assert losses[-1] < losses[0]
    assert result.samples_per_second > 0


def test_dpo_objective(tmp_path, base_model):
    pairs = [PreferenceExample(e.messages, e.completion, "I am not sure.") for e in distill()]
    config = TrainingConfig(objective="dpo", epochs=1, batch_size=3, learning_rate=1e-3, save_steps=100)
    result = train_adapter(base_model.path, pairs, config, work_dir=tmp_path)
    check_adapter_dir(result.adapter_dir)
    assert result.steps == 2
    assert any("loss" in e for e in result.log)


def test_training_resumes_from_its_last_checkpoint(tmp_path, base_model):
    config = TrainingConfig(epochs=2, batch_size=2, save_steps=1)
    calls = []

    def die_on_third_step(units: int) -> None:
        calls.append(units)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process is stopped between checkpoint 2 and 3

    with pytest.raises(KeyboardInterrupt):
        train_adapter(base_model.path, distill(), config, work_dir=tmp_path, progress=die_on_third_step)
    assert (tmp_path / "checkpoints" / "checkpoint-2").is_dir()
    result = train_adapter(base_model.path, distill(), config, work_dir=tmp_path)
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-2")
    assert result.steps == 6
    assert result.samples_seen == 4 * 2  # only the remaining steps ran
    state = json.loads((tmp_path / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6


def test_a_warm_start_continues_the_champions_weights(tmp_path, base_model):
    from safetensors.torch import load_file

    champion = train_adapter(
        base_model.path,
        distill(),
        TrainingConfig(epochs=2, batch_size=3, learning_rate=2e-3, save_steps=100, lora_rank=8, lora_alpha=16),
        work_dir=tmp_path / "champion",
    ).adapter_dir
    # A next round on new prompts, from the champion (its rank 8 kept although the config says 16), a tiny step.
    tiny = TrainingConfig(epochs=1, batch_size=6, learning_rate=1e-9, save_steps=100)
    warm = train_adapter(
        base_model.path, distill()[:3], replace(tiny, init_adapter=champion), work_dir=tmp_path / "warm"
    ).adapter_dir
    cold = train_adapter(base_model.path, distill()[:3], tiny, work_dir=tmp_path / "cold").adapter_dir
    assert check_adapter_dir(warm)["r"] == 8 and check_adapter_dir(cold)["r"] == 16
    before, after = load_file(champion / "adapter_model.safetensors"), load_file(warm / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    lora_b = [k for k in before if "lora_B" in k]
    assert lora_b and all(before[k].abs().sum() > 0 for k in lora_b)  # the champion learnt something
    assert all((after[k] - before[k]).abs().max() < 1e-4 for k in before)  # and the warm start kept it
    fresh = load_file(cold / "adapter_model.safetensors")
    assert all(fresh[k].abs().max() < 1e-4 for k in fresh if "lora_B" in k)  # a fresh LoRA starts at B = 0

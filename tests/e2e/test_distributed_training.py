"""Training under `accelerate launch`: two gloo processes on the CPU train the real model, as several GPUs would."""

import pytest

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.generation.local import TransformersGenerator
from taoflow.connectors.protocols import SamplingConfig
from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.training.launch import train_adapter_distributed
from taoflow.connectors.training.lora import DistillExample, PromptExample, TrainingConfig

pytestmark = pytest.mark.slow

FACT = "The answer is 42, my friend."


def test_two_processes_train_an_adapter_and_resume_from_its_checkpoint(tmp_path, base_model):
    examples = [DistillExample((Message("user", "What is 12 + 30?"),), FACT)] * 16
    config = TrainingConfig(epochs=2, batch_size=4, learning_rate=3e-3, save_steps=1)
    steps = []
    result = train_adapter_distributed(
        base_model.path, examples, config, work_dir=tmp_path, processes=2, progress=steps.append
    )
    # 16 examples over 2 processes of 4 per step: 2 steps an epoch, every sample seen once an epoch.
    assert (result.steps, result.samples_seen, len(steps)) == (4, 32, 4)
    assert result.resumed_from is None and result.final_loss is not None
    generator = TransformersGenerator(base_model.path, batch_rows=8)
    greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=16)
    (answer,) = generator.generate([[Message("user", "What is 12 + 30?")]], greedy, adapter=result.adapter_dir)[0]
    assert "my friend" in answer.text

    # A longer run over the same work directory continues from the last checkpoint instead of starting over.
    more = train_adapter_distributed(
        base_model.path, examples, TrainingConfig(**{**config.__dict__, "epochs": 3}), work_dir=tmp_path, processes=2
    )
    assert more.resumed_from is not None and more.resumed_from.endswith("checkpoint-4")
    assert (more.steps, more.samples_seen) == (6, 16)


def test_grpo_and_fsdp_on_cpus_are_refused_before_anything_starts(tmp_path, base_model):
    record = PromptRecord("r1", "math", (Message("user", "What is 1 + 1?"),))
    with pytest.raises(ConfigurationError, match="grpo runs in one process"):
        train_adapter_distributed(
            base_model.path, [PromptExample(record)], TrainingConfig(objective="grpo"), work_dir=tmp_path, processes=2
        )
    with pytest.raises(ConfigurationError, match="FSDP to CPU processes"):
        train_adapter_distributed(
            base_model.path,
            [DistillExample(record.messages, "2")],
            TrainingConfig(),
            work_dir=tmp_path,
            processes=2,
            fsdp=True,
        )
    assert not (tmp_path / "distributed-job.json").exists()

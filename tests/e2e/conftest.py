import pytest

from taoflow.connectors.generation.base_model import resolve_base_model
from taoflow.daemon.settings import load_settings


@pytest.fixture(scope="session")
def fleet_adapters(base_model, tmp_path_factory):
    """Adapters trained by the project on the real model: versions that answer one prompt differently (42 right,
    43 and 44 wrong, a wordy 42), one that refuses arithmetic (passes every file check, fails the smoke
    evaluation), and three bad ones."""
    import shutil

    from taoflow.connectors.records import Message
    from taoflow.connectors.training.lora import DistillExample, TrainingConfig, train_adapter

    root = tmp_path_factory.mktemp("adapters")
    question = (Message("user", "What is 12 + 30?"),)
    config = TrainingConfig(epochs=6, batch_size=4, learning_rate=3e-3, save_steps=1000)

    def train(name, examples, **overrides):
        from dataclasses import replace

        return train_adapter(base_model.path, examples, replace(config, **overrides), work_dir=root / name).adapter_dir

    adapters = {
        "v42": train("v42", [DistillExample(question, "The answer is 42, my friend.")] * 8),
        "v43": train("v43", [DistillExample(question, "The answer is 43, buddy.")] * 8),
        "v44": train("v44", [DistillExample(question, "The answer is 44, pal.")] * 8),
        # Right, and padded out the way a judge that likes long answers would reward (tests/e2e/test_shadow.py).
        "wordy": train("wordy", [DistillExample(question, WORDY)] * 8),
        "refuser": train(
            "refuser",
            [
                DistillExample((Message("user", f"What is {a} + {a + 3}?"),), "I refuse to do arithmetic.")
                for a in range(1, 13)
            ],
        ),
        "rank32": train("rank32", [DistillExample(question, "42")] * 4, lora_rank=32, lora_alpha=64, epochs=1),
        "wrong_base": train_on_other_base(root, question),
    }
    corrupt = root / "corrupt"
    shutil.copytree(adapters["v42"], corrupt)
    weights = corrupt / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    adapters["corrupt"] = corrupt
    return adapters


WORDY = (
    "The answer is 42, my friend. Let me walk you through it with great care: twelve plus thirty makes forty-two,"
    " which I have checked twice, thoroughly and diligently."
)


def train_on_other_base(root, question):
    """A real LoRA adapter of another (tiny, randomly initialised) Llama: the wrong base model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from taoflow.connectors.training.lora import DistillExample, TrainingConfig, train_adapter

    base = resolve_base_model("smollm2-135m-instruct", cache_dir=load_settings(None).model.cache_dir.expanduser())
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    other = root / "other-base"
    LlamaForCausalLM(config).save_pretrained(other)
    tokenizer.save_pretrained(other)
    examples = [DistillExample(question, "42")] * 4
    return train_adapter(other, examples, TrainingConfig(epochs=1, batch_size=4), work_dir=root / "wrong").adapter_dir

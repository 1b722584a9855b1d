"""Agent prompts on the real model: rendered with their tools and calls for generation and for training (SFT and
DPO through TRL), the loss on the answer only; a template that drops tools stops a tool-learning round early."""

from dataclasses import replace

import pytest

from taoflow.connectors.errors import ConfigurationError, RoundError
from taoflow.connectors.generation.local import load_tokenizer
from taoflow.connectors.generation.templates import chat_template_text
from taoflow.connectors.records import Chat, Message, Tool, ToolCall
from taoflow.connectors.training.lora import (
    DistillExample,
    PreferenceExample,
    TrainingConfig,
    _build_trainer,
    _lora,
    train_adapter,
)
from taoflow.daemon.round.parts import check_tool_template
from taoflow.daemon.settings import load_settings

pytestmark = pytest.mark.slow

WEATHER = Tool("get_weather", "The weather in a city.", {"type": "object", "properties": {"city": {"type": "string"}}})
HISTORY = (
    Message("user", "Weather in Rome?"),
    Message("assistant", "", (ToolCall("c0", "get_weather", '{"city": "Rome"}'),)),
    Message("tool", '{"temperature_c": 20}', tool_call_id="c0"),
    Message("assistant", "It is 20 C in Rome."),
    Message("user", "And in Paris?"),
)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_generation_renders_the_tools_and_the_earlier_calls_and_results(base_model):
    from taoflow.connectors.generation.local import TransformersGenerator

    generator = TransformersGenerator(base_model.path, chat_template=chat_template_text("chatml-tools"))
    try:
        rendered = generator._render(Chat(HISTORY, (WEATHER,)))
        assert '"name": "get_weather", "description": "The weather in a city."' in rendered  # the tool's schema
        assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>' in rendered
        assert '<|im_start|>tool\n<tool_response>\n{"temperature_c": 20}\n</tool_response>' in rendered
        assert rendered.endswith("<|im_start|>user\nAnd in Paris?<|im_end|>\n<|im_start|>assistant\n")
        plain = generator._render([Message("user", "Hi")])  # a prompt without tools renders as the model's own
        own = load_tokenizer(base_model.path).apply_chat_template(
            [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
        )
        assert plain == own
    finally:
        generator.close()


def test_training_examples_are_rendered_with_their_tools_and_learn_only_the_answer(tmp_path, base_model):
    from transformers import AutoModelForCausalLM

    config = TrainingConfig(max_length=1024, chat_template=chat_template_text("chatml-tools"))
    tokenizer = load_tokenizer(base_model.path)
    tokenizer.chat_template = config.chat_template
    model = AutoModelForCausalLM.from_pretrained(base_model.path)
    example = DistillExample(HISTORY, CALL, tools=(WEATHER,))
    trainer = _build_trainer(model, tokenizer, [example], config, tmp_path, _lora(config))
    row = trainer.train_dataset[0]
    text = tokenizer.decode(row["input_ids"])
    assert '"name": "get_weather", "description": "The weather in a city."' in text
    assert '{"temperature_c": 20}' in text and "And in Paris?" in text
    learned = tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100])
    assert learned.startswith(CALL) and "Paris?" not in learned


def test_sft_and_dpo_train_on_agent_examples(tmp_path, base_model):
    template = chat_template_text("chatml-tools")
    sft = [DistillExample(HISTORY, CALL, tools=(WEATHER,)), DistillExample((Message("user", "Hi"),), "Hello!")]
    config = TrainingConfig(epochs=1, batch_size=2, max_length=1024, chat_template=template)
    result = train_adapter(base_model.path, sft, config, work_dir=tmp_path / "s")
    assert result.steps == 1 and result.final_loss is not None and result.too_long == 0
    # At the default max_length the agent example's answer lies past the end: left out and counted, not trained.
    short = train_adapter(base_model.path, sft, replace(config, max_length=256), work_dir=tmp_path / "short")
    assert short.too_long == 1
    with pytest.raises(RoundError, match=r"longer than train\.max_length"):
        train_adapter(base_model.path, sft[:1], replace(config, max_length=256), work_dir=tmp_path / "none")
    pairs = [PreferenceExample(HISTORY, CALL, "It is sunny in Paris.", tools=(WEATHER,))]
    dpo = TrainingConfig(objective="dpo", epochs=1, batch_size=1, max_length=1024, chat_template=template)
    assert train_adapter(base_model.path, pairs, dpo, work_dir=tmp_path / "d").steps == 1


def test_a_round_that_learns_tool_use_stops_early_on_a_template_that_drops_tools(base_model):
    settings = load_settings(None, model={"tool_call_parser": "hermes"})
    with pytest.raises(ConfigurationError, match="does not render tools"):
        check_tool_template(settings, base_model.path)  # SmolLM2's own template drops tools silently
    fixed = load_settings(None, model={"tool_call_parser": "hermes", "chat_template": "chatml-tools"})
    check_tool_template(fixed, base_model.path)

"""No prompt is trained toward a kind of answer it must not get: an agent prompt whose right answer is a call never
toward text, a `tool_choice: none` prompt never toward a call, a malformed call never; examples carry their tools."""

import json

import pytest

from taoflow.connectors.protocols import Completion
from taoflow.connectors.records import Message, PromptRecord, Tool, ToolCall
from taoflow.connectors.training.launch import read_job, write_job
from taoflow.connectors.training.lora import DistillExample, TrainingConfig
from taoflow.daemon.round.candidates import Selection, learns_from, training_examples
from taoflow.daemon.settings import SandboxSettings, ScorerSpec
from taoflow.policies.selection import ScoredCandidate

WEATHER = Tool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"}}})
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TEXT = "It is sunny in Paris."
CUT = '<tool_call>\n{"name": "get_weather", "arg'
ASK = Message("user", "Weather in Paris?")
RESULT = (
    ASK,
    Message("assistant", "", (ToolCall("c1", "get_weather", '{"city": "Paris"}'),)),
    Message("tool", '{"sky": "sunny"}', tool_call_id="c1"),
)


def agent(messages=(ASK,), **fields):
    return PromptRecord("r", "agent", tuple(messages), tools=(WEATHER,), **fields)


def scored(*answers):
    return [ScoredCandidate(text, 1.0, 10, True) for text in answers]


HERMES = Selection(objective="sft", mode="threshold", per_prompt=4, tool_call_parser="hermes")


@pytest.mark.parametrize(
    ("record", "targets"),
    [
        (agent(), [CALL]),  # tools offered, nothing says text is right: calls only
        (agent(response="", response_calls=(ToolCall("x", "get_weather", "{}"),)), [CALL]),
        (agent(response="Sunny."), [CALL, TEXT]),  # production answered in text: either
        (agent(RESULT), [CALL, TEXT]),  # the turn answers a tool's result: either
        (agent(tool_choice="none"), [TEXT]),
        (agent(tool_choice="required", response="Sunny."), [CALL]),
        (PromptRecord("r", "plain", (ASK,)), [CALL, TEXT, CUT]),  # a prompt without tools: as before
    ],
)
def test_a_prompt_is_trained_only_toward_the_kind_of_answer_it_may_get(record, targets):
    examples = training_examples([(record, scored(CALL, TEXT, CUT))], HERMES)
    assert sorted(e.completion for e in examples) == sorted(targets)
    assert all(e.tools == record.tools for e in examples)


def test_no_tool_prompt_is_trained_toward_text_even_when_text_scores_best():
    record = agent()
    only_text = [ScoredCandidate(TEXT, 1.0, 5, True), ScoredCandidate(CUT, 0.0, 5, True)]
    assert training_examples([(record, only_text)], HERMES) == []
    assert not learns_from(HERMES, record, only_text)  # left for a later round, not counted as learned
    without_parser = Selection(objective="sft", per_prompt=4)  # model.tool_call_parser none: no answer is a call
    assert training_examples([(record, scored(CALL, TEXT))], without_parser) == []


def test_a_preference_pair_prefers_only_an_answer_the_prompt_may_get_and_grpo_leaves_agent_prompts_out():
    dpo = Selection(objective="dpo", mode="threshold", tool_call_parser="hermes")
    text_best = [ScoredCandidate(TEXT, 1.0, 5, True), ScoredCandidate(CALL, 0.0, 5, True)]
    call_best = [ScoredCandidate(CALL, 1.0, 5, True), ScoredCandidate(TEXT, 0.0, 5, True)]
    assert training_examples([(agent(), text_best)], dpo) == []
    (pair,) = training_examples([(agent(), call_best)], dpo)
    assert (pair.chosen, pair.rejected, pair.tools) == (CALL, TEXT, (WEATHER,))
    grpo = Selection(objective="grpo", tool_call_parser="hermes")
    spread = [ScoredCandidate(CALL, 1.0, 5, True), ScoredCandidate(TEXT, 0.0, 5, True)]
    assert training_examples([(agent(), spread)], grpo) == []


def test_a_training_job_file_keeps_each_examples_tools_and_calls(tmp_path):
    example = DistillExample(RESULT, "Sunny.", tools=(WEATHER,))
    write_job(tmp_path / "job.json", tmp_path, [example, DistillExample((ASK,), "Hi")], TrainingConfig())
    _, (read, plain), _ = read_job(tmp_path / "job.json")
    assert read == example and plain == DistillExample((ASK,), "Hi")
    assert "tools" not in json.loads((tmp_path / "job.json").read_text())["examples"][1]


class Recording:
    """A generator that answers every conversation with a call, and keeps what it was asked."""

    def __init__(self):
        self.asked = []

    def generate(self, conversations, sampling, *, adapter=None, progress=None):
        self.asked += list(conversations)
        return [[Completion(CALL, 9, True)] * sampling.n for _ in conversations]

    def close(self):
        pass


def test_candidates_and_the_gate_are_sampled_with_each_prompts_tools():
    from taoflow.daemon.round.evaluation import evaluate
    from taoflow.daemon.round.parts import TaskScorers
    from taoflow.daemon.round.stages import generate_candidates
    from taoflow.daemon.settings import load_settings

    records = [agent(), PromptRecord("p", "plain", (ASK,))]
    generator = Recording()
    generate_candidates(generator, records, [2, 2], settings=load_settings(None), seeds=[0, 0], adapter=None)
    spec = [ScorerSpec(type="tool_call")]
    scorers = TaskScorers({"agent": spec}, spec, sandbox=SandboxSettings(enabled=False))
    evaluation = evaluate(generator, records[:1], scorers, adapter=None, max_new_tokens=8)
    assert [(c.messages, c.tools) for c in generator.asked] == [(r.messages, r.tools) for r in (*records, records[0])]
    assert evaluation.scores == {"agent": [1.0]}

"""Reading calls back from a model's answer, in each family's convention; bounded, and never guessing."""

import json

import pytest

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import ToolCall
from taoflow.connectors.tool_calls import MAX_CALLS, call_signature, parse_answer

UNCLOSED = '<tool_call>\n{"name": "get_weather", "arguments": {"ci'
HERMES = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize(
    ("parser", "answer", "content", "calls", "malformed"),
    [
        ("hermes", HERMES, "", (ToolCall("call_0", "get_weather", '{"city": "Paris"}'),), ""),
        (
            "hermes",
            "Let me check.\n" + HERMES + "\n" + HERMES.replace("Paris", "Rome"),
            "Let me check.",
            (
                ToolCall("call_0", "get_weather", '{"city": "Paris"}'),
                ToolCall("call_1", "get_weather", '{"city": "Rome"}'),
            ),
            "",
        ),
        ("hermes", "It is sunny in Paris.", "It is sunny in Paris.", (), ""),
        ("hermes", UNCLOSED, UNCLOSED, (), "not closed"),
        ("hermes", "<tool_call>get_weather(Paris)</tool_call>", "", (), "not JSON"),
        ("hermes", '<tool_call>{"arguments": {}}</tool_call>', "", (), "without a function name"),
        ("hermes", '<tool_call>{"name": "f", "arguments": [1]}</tool_call>', "", (), "not an object"),
        ("hermes", "<tool_call>" + "[" * 100_000 + "</tool_call>", "", (), "nested too deep"),
        (
            "llama3_json",
            '{"name": "get_weather", "parameters": {"city": "Paris"}}',
            "",
            (ToolCall("call_0", "get_weather", '{"city": "Paris"}'),),
            "",
        ),
        ("llama3_json", "Paris is sunny.", "Paris is sunny.", (), ""),
        ("llama3_json", '{"name": "f", "parameters": {}', "", (), "not JSON"),
        ("none", HERMES, HERMES, (), ""),
    ],
)
def test_an_answer_reads_back_as_text_and_calls(parser, answer, content, calls, malformed):
    parsed = parse_answer(answer, parser)
    assert parsed.content == content and parsed.calls == calls
    assert malformed in parsed.malformed and bool(parsed.malformed) == bool(malformed)
    assert parsed.is_call == bool(calls or malformed)


def test_an_answer_with_more_calls_than_the_bound_reads_only_the_bound():
    assert len(parse_answer(HERMES * (MAX_CALLS + 50), "hermes").calls) == MAX_CALLS


def test_calls_agree_on_name_and_arguments_whatever_their_spacing_and_key_order():
    spaced = '<tool_call>{"arguments": {"unit": "C",  "city": "Paris"}, "name": "get_weather"}</tool_call>'
    tight = '<tool_call>{"name":"get_weather","arguments":{"city":"Paris","unit":"C"}}</tool_call>'
    assert call_signature(spaced, "hermes") == call_signature(tight, "hermes") is not None
    assert json.loads(call_signature(tight, "hermes")) == [["get_weather", {"city": "Paris", "unit": "C"}]]
    assert call_signature(HERMES, "hermes") != call_signature(tight, "hermes")
    assert call_signature("sunny", "hermes") is None
    with pytest.raises(ConfigurationError):
        call_signature(HERMES, "mistral")

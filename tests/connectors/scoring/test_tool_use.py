"""The tool_call verifier: calls checked against the request's own tools and tool_choice, hostile schemas bounded."""

import pytest

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import Message, PromptRecord, Tool
from taoflow.connectors.scoring.composite import build_scorer
from taoflow.connectors.scoring.sandbox import SandboxedScorer, SandboxLimits
from taoflow.connectors.scoring.verifiers import SelfConsistencyScorer

WEATHER = Tool(
    "get_weather",
    "The weather in a city.",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
TIME = Tool("get_time", "", {"type": "object", "properties": {"zone": {"type": "string"}}})


def call(name, arguments):
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


def rec(tool_choice=None, tools=(WEATHER, TIME)):
    return PromptRecord("r", "agent", (Message("user", "Weather in Paris?"),), tools=tools, tool_choice=tool_choice)


GOOD = call("get_weather", '{"city": "Paris", "unit": "C"}')
ANSWERS = [
    GOOD,
    call("get_weather", '{"unit": "C"}'),  # a required argument missing
    call("get_weather", '{"city": "Paris", "when": "now"}'),  # an argument the schema does not allow
    call("get_time", '{"zone": "CET"}'),  # another tool of the request
    call("delete_everything", "{}"),  # no tool of the request
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa',  # cut off
    "It is sunny in Paris.",  # text
]


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        (None, [1.0, 0.25, 0.25, 1.0, 0.0, 0.0, None]),
        ("auto", [1.0, 0.25, 0.25, 1.0, 0.0, 0.0, None]),
        ("required", [1.0, 0.25, 0.25, 1.0, 0.0, 0.0, 0.0]),
        ("get_weather", [1.0, 0.25, 0.25, 0.0, 0.0, 0.0, 0.0]),
        ("none", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, None]),
    ],
)
def test_calls_are_scored_against_the_requests_tools_and_tool_choice(tool_choice, expected):
    scorer = build_scorer("tool_call", {"parser": "hermes", "partial": 0.25})
    assert scorer.score(rec(tool_choice), ANSWERS) == expected


def test_a_prompt_without_tools_is_not_judged_and_a_bad_configuration_fails_at_start():
    scorer = build_scorer("tool_call", {})
    assert scorer.score(rec(tools=()), [GOOD, "text"]) == [None, None]
    with pytest.raises(ConfigurationError):
        build_scorer("tool_call", {"parser": "mistral"})
    with pytest.raises(ConfigurationError):
        build_scorer("tool_call", {"partial": 2})


def test_calls_agree_as_self_consistency_over_name_and_arguments():
    scorer = SelfConsistencyScorer(extract="tool_call", parser="hermes")
    same = call("get_weather", '{"unit": "C", "city": "Paris"}')  # the first call, keys in another order
    assert scorer.score(rec(), [GOOD, same, call("get_time", "{}"), "text"]) == [1.0, 1.0, 0.5, 0.0]


def test_a_hostile_schema_from_a_log_is_bounded_in_the_sandbox():
    catastrophic = Tool(
        "f", "", {"type": "object", "properties": {"s": {"type": "string", "pattern": r"^(\w+\s?)+\.$"}}}
    )
    remote = Tool("g", "", {"$ref": "http://169.254.169.254/latest/meta-data"})  # never fetched
    invalid = Tool("h", "", {"type": 12})  # not a schema: arguments only need to be an object
    scorer = SandboxedScorer([("tool_call", {}, 1.0)], SandboxLimits(seconds_per_candidate=0.5))
    try:
        assert scorer.score(rec(tools=(remote, invalid)), [call("g", "{}"), call("h", '{"x": 1}')]) == [0.0, 1.0]
        hostile = call("f", '{"s": "' + "a" * 40 + '!"}')
        assert scorer.score(rec(tools=(catastrophic,)), [hostile]) == [None]  # cut off, left unscored
        assert scorer.score(rec(tools=(catastrophic,)), [call("f", '{"s": "fine."}')]) == [1.0]
    finally:
        scorer.close()

"""Agent traffic and the newer APIs, as a production endpoint logs them (the shapes of the issue's table), stored
whole: tools, `tool_choice`, assistant calls, tool results with their call ids, an answer that is a call, in OpenAI
chat (also legacy function calling), Anthropic Messages, OpenAI Responses and Databricks rows of each. What taoflow
cannot hold faithfully (hosted tools, an error-flagged result, a stored conversation it cannot see) is refused as
`UnsupportedRecord` with its reason and counted by ingest as skipped, never stored altered."""

import hashlib
import json

import pytest

from taoflow.connectors.errors import RecordError, UnsupportedRecord
from taoflow.connectors.records import Message, PromptRecord, Tool, ToolCall
from taoflow.connectors.sources.formats import parse_payload, parse_record
from taoflow.connectors.sources.jsonl import JsonlSource
from taoflow.connectors.sources.redaction import Redactor
from taoflow.daemon.ingest.ingestor import Ingestor
from taoflow.policies.ingest_filter import IngestFilter

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
TOOL = Tool("get_weather", "", SCHEMA)
PARIS = ToolCall("call_1", "get_weather", '{"city": "Paris"}')
ASK = Message("user", "Weather in Paris?")

KEPT = {
    # An OpenAI chat request with tools, its answer a tool call.
    "chat_with_tools": (
        {
            "request": {
                "model": "agent",
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
                "tools": [WEATHER],
                "tool_choice": "auto",
            },
            "response": {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [CALL]}}]},
        },
        PromptRecord("x", "agent", (ASK,), tools=(TOOL,), tool_choice="auto", response="", response_calls=(PARIS,)),
    ),
    # Multi-turn: user, the assistant's tool call, the tool's result; the model answers the result.
    "multi_turn_tool_result": (
        {
            "request": {
                "model": "agent",
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {"role": "assistant", "content": None, "tool_calls": [CALL]},
                    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
                ],
            }
        },
        PromptRecord(
            "x",
            "agent",
            (ASK, Message("assistant", "", (PARIS,)), Message("tool", '{"temp": 21}', tool_call_id="call_1")),
            tools=(TOOL,),
            tool_choice="get_weather",
        ),
    ),
    "legacy_function_call": (
        {
            "request": {
                "functions": [{"name": "f", "parameters": {"type": "object"}}],
                "function_call": "auto",
                "messages": [
                    {"role": "user", "content": "Weather?"},
                    {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                    {"role": "function", "name": "f", "content": "21"},
                ],
            }
        },
        PromptRecord(
            "x",
            "default",
            (
                Message("user", "Weather?"),
                Message("assistant", "", (ToolCall("", "f", "{}"),)),
                Message("tool", "21", tool_call_id=""),
            ),
            tools=(Tool("f", "", {"type": "object"}),),
            tool_choice="auto",
        ),
    ),
    "anthropic_tool_use": (
        {
            "request": {
                "model": "claude-like",
                "system": "You are an agent.",
                "tools": [
                    {
                        "name": "w",
                        "description": "Weather.",
                        "input_schema": {"type": "object"},
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
                "tool_choice": {"type": "any"},
                "messages": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "text", "text": "Checking."},
                            {"type": "tool_use", "id": "t1", "name": "w", "input": {}},
                        ],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t1", "content": "21"},
                            {"type": "text", "text": "And in C?"},
                        ],
                    },
                ],
            },
            "response": {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t2", "name": "w", "input": {"unit": "C"}}],
            },
        },
        PromptRecord(
            "x",
            "claude-like",
            (
                Message("system", "You are an agent."),
                ASK,
                Message("assistant", "Checking.", (ToolCall("t1", "w", "{}"),)),
                Message("tool", "21", tool_call_id="t1"),
                Message("user", "And in C?"),
            ),
            tools=(Tool("w", "Weather.", {"type": "object"}),),
            tool_choice="required",
            response="",
            response_calls=(ToolCall("t2", "w", '{"unit": "C"}'),),
        ),
    ),
    "responses_function_call": (
        {
            "request": {
                "model": "agent",
                "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}, "strict": True}],
                "input": [
                    {"role": "user", "content": "Weather in Paris?"},
                    {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                    {"type": "function_call", "call_id": "c2", "name": "w", "arguments": "{}"},
                    {"type": "function_call_output", "call_id": "c1", "output": "21"},
                    {"type": "function_call_output", "call_id": "c2", "output": "22"},
                ],
            },
            "response": {
                "object": "response",
                "output": [
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "21 and 22"}]}
                ],
            },
        },
        PromptRecord(
            "x",
            "agent",
            (
                ASK,
                Message("assistant", "", (ToolCall("c1", "w", "{}"), ToolCall("c2", "w", "{}"))),
                Message("tool", "21", tool_call_id="c1"),
                Message("tool", "22", tool_call_id="c2"),
            ),
            tools=(Tool("w", "", {"type": "object"}, True),),
            response="21 and 22",
        ),
    ),
    "responses_answer_is_a_call": (
        {
            "request": {
                "model": "agent",
                "input": "Weather in Paris?",
                "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
            },
            "response": {
                "object": "response",
                "output": [
                    {"type": "reasoning", "summary": []},
                    {"type": "function_call", "call_id": "c9", "name": "w", "arguments": '{"city":"Paris"}'},
                ],
            },
        },
        PromptRecord(
            "x",
            "agent",
            (ASK,),
            tools=(Tool("w", "", {"type": "object"}),),
            response="",
            response_calls=(ToolCall("c9", "w", '{"city":"Paris"}'),),
        ),
    ),
    "databricks_row_with_tools": (
        {
            "databricks_request_id": "dbx-1",
            "timestamp_ms": 1763700000123,
            "status_code": 200,
            "request": json.dumps({"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER]}),
            "response": json.dumps({"choices": [{"message": {"role": "assistant", "tool_calls": [CALL]}}]}),
        },
        PromptRecord("x", "default", (ASK,), tools=(TOOL,), response="", response_calls=(PARIS,)),
    ),
}


def _whole(record: PromptRecord) -> tuple:
    return (record.task, record.messages, record.tools, record.tool_choice, record.response, record.response_calls)


@pytest.mark.parametrize("name", sorted(KEPT))
def test_agent_traffic_is_stored_whole_and_round_trips_through_the_buffer_shape(name):
    logged, expected = KEPT[name]
    record = parse_payload(json.dumps(logged))
    assert _whole(record) == _whole(expected)
    assert record.uses_tools
    again = PromptRecord.from_json(record.to_json())
    assert _whole(again) == _whole(record) and again.prompt_hash == record.prompt_hash
    exported = parse_record(json.loads(record.to_json()))  # taoflow's export shape read back as a log line
    assert _whole(exported) == _whole(record)


def test_tools_calls_and_results_are_part_of_the_prompt_hash_and_plain_prompts_hash_as_before():
    plain = PromptRecord("a", "t", (ASK,))
    # A record without tools hashes as before tools were stored, so buffers written then dedup against it.
    assert plain.prompt_hash == hashlib.sha256(b"user\x1fweather in paris?\x1e").hexdigest()
    with_tools = PromptRecord("a", "t", (ASK,), tools=(TOOL,))
    other_tools = PromptRecord("a", "t", (ASK,), tools=(Tool("get_weather", "Weather now.", SCHEMA),))
    forced = PromptRecord("a", "t", (ASK,), tools=(TOOL,), tool_choice="get_weather")
    assert len({plain.prompt_hash, with_tools.prompt_hash, other_tools.prompt_hash, forced.prompt_hash}) == 4
    spaced = ToolCall("call_1", "get_weather", '{ "city":  "Paris" }')
    turns = (ASK, Message("assistant", "", (PARIS,)), Message("tool", "21", tool_call_id="call_1"))
    respaced = (ASK, Message("assistant", "", (spaced,)), Message("tool", "21", tool_call_id="call_1"))
    other = (ASK, Message("assistant", "", (PARIS,)), Message("tool", "22", tool_call_id="call_1"))
    assert PromptRecord("a", "t", turns).prompt_hash == PromptRecord("b", "t", respaced).prompt_hash
    assert PromptRecord("a", "t", turns).prompt_hash != PromptRecord("a", "t", other).prompt_hash


REFUSED = {
    "hosted_tool": ({"request": {"input": "Find news", "tools": [{"type": "web_search"}]}}, "unsupported_tools"),
    "hosted_call": (
        {"request": {"input": [{"role": "user", "content": "Find"}, {"type": "web_search_call", "id": "w"}]}},
        "unsupported_tools",
    ),
    "error_result": (
        {
            "request": {
                "system": "s",
                "messages": [
                    {"role": "user", "content": "Go"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {}}]},
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x", "is_error": True}],
                    },
                ],
            }
        },
        "unsupported_tools",
    ),
    "continues_stored": (
        {"request": {"input": "And tomorrow?", "previous_response_id": "resp_1"}},
        "unsupported_context",
    ),
    "a_refusal": (
        {
            "request": {"messages": [{"role": "user", "content": "Hack it"}]},
            "response": {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "I can't."}}]},
        },
        "unsupported_content",
    ),
    "unknown_tool_fields": (
        {
            "request": {
                "messages": [{"role": "user", "content": "Hi"}],
                "tools": [{"type": "function", "function": {"name": "f", "grammar": "x"}}],
            }
        },
        "unsupported_tools",
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_cannot_be_held_faithfully_is_refused_with_its_reason(name):
    logged, reason = REFUSED[name]
    with pytest.raises(UnsupportedRecord) as info:
        parse_payload(json.dumps(logged))
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([{"role": "user", "content": "Hi"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}], "bad_message"),
        ([{"role": "user", "content": "Hi"}, {"role": "tool", "content": "1"}], "bad_message"),
        ([{"role": "user", "content": "Hi", "tool_calls": [CALL]}], "bad_message"),
        (
            [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "tool_calls": [{"function": {}}]},
                {"role": "user", "content": "?"},
            ],
            "bad_tool_call",
        ),
    ],
)
def test_malformed_tool_traffic_is_a_dead_letter_with_its_reason(messages, reason):
    with pytest.raises(RecordError) as info:
        parse_payload(json.dumps({"request": {"messages": messages}}))
    assert info.value.reason == reason and not isinstance(info.value, UnsupportedRecord)


def test_a_tool_choice_naming_no_tool_of_the_request_is_malformed():
    request = {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "delete_everything"}},
    }
    with pytest.raises(RecordError) as info:
        parse_payload(json.dumps({"request": request}))
    assert info.value.reason == "bad_tool_choice"


def test_redaction_reaches_call_arguments_and_tool_results_and_leaves_clean_calls_as_written():
    secret = ToolCall("c1", "send", '{"to": "ann@example.com",  "password": "hunter2"}')
    record = PromptRecord(
        "r",
        "t",
        (ASK, Message("assistant", "", (secret, PARIS)), Message("tool", "mailed ann@example.com", tool_call_id="c1")),
        response_calls=(secret,),
    )
    clean = Redactor(["secrets", "emails"]).record(record)
    sent = json.loads(clean.messages[1].tool_calls[0].arguments)
    assert "ann@example.com" not in sent["to"] and sent["password"] == "[REDACTED]"
    assert clean.messages[1].tool_calls[1] == PARIS  # nothing to redact: the arguments' text is unchanged
    assert "ann@example.com" not in clean.messages[2].content and clean.messages[2].tool_call_id == "c1"
    assert clean.response_calls[0] == clean.messages[1].tool_calls[0]


def test_an_anthropic_messages_exchange_keeps_its_system_prompt_and_text_blocks():
    record = parse_payload(
        json.dumps(
            {
                "request": {
                    "model": "claude-like",
                    "max_tokens": 64,
                    "system": [{"type": "text", "text": "Answer in French."}],
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
                },
                "response": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "Bonjour"}]},
            }
        )
    )
    assert record.messages == (Message("system", "Answer in French."), Message("user", "Hello"))
    assert record.response == "Bonjour" and record.task == "claude-like"


def test_a_responses_exchange_keeps_its_instructions_and_message_items():
    exchange = {
        "request": {
            "model": "gpt-like",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "2 + 2?"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "4"}]},
                {"role": "user", "content": "And 3 + 3?"},
            ],
        },
        "response": {
            "object": "response",
            "output": [
                {"type": "reasoning", "summary": []},  # not part of the answer's text
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "6"}]},
            ],
        },
    }
    record = parse_payload(json.dumps(exchange))
    assert record.messages == (
        Message("system", "Be brief."),
        Message("user", "2 + 2?"),
        Message("assistant", "4"),
        Message("user", "And 3 + 3?"),
    )
    assert record.response == "6"
    bare = parse_payload(json.dumps({"model": "gpt-like", "input": "Hi there"}))  # a request body alone
    assert bare.messages == (Message("user", "Hi there"),)


def test_a_databricks_row_of_an_anthropic_request_keeps_its_system_prompt():
    row = {
        "databricks_request_id": "dbx-2",
        "timestamp_ms": 1763700000123,
        "status_code": 200,
        "request": json.dumps({"system": "Be kind.", "messages": [{"role": "user", "content": "Hi"}]}),
    }
    assert parse_payload(json.dumps(row)).messages == (Message("system", "Be kind."), Message("user", "Hi"))


def _ingest(tmp_path, state, rules):
    logs = tmp_path / "agents.jsonl"
    plain = {"request": {"model": "agent", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}}
    rows = [plain, *(logged for logged, _ in KEPT.values()), *(logged for logged, _ in REFUSED.values())]
    logs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return Ingestor(state.buffer, source="jsonl", rules=rules).run(JsonlSource([logs]).read())


def test_ingest_stores_agent_traffic_whole_when_rounds_learn_tool_use(tmp_path, state):
    report = _ingest(tmp_path, state, IngestFilter(tools=True))  # model.tool_call_parser is set
    kept = {parse_payload(json.dumps(logged)).prompt_hash for logged, _ in KEPT.values()}
    assert report.added == 1 + len(kept)
    assert report.skipped == {"unsupported_tools": 4, "unsupported_context": 1, "unsupported_content": 1}
    assert not report.dead_lettered
    (stored,) = [p for p in state.buffer.training_prompts(100) if p.record.request_id == "dbx-1"]
    assert _whole(stored.record) == _whole(KEPT["databricks_row_with_tools"][1])


def test_without_a_tool_call_parser_ingest_skips_agent_traffic_rather_than_store_it(tmp_path, state):
    report = _ingest(tmp_path, state, IngestFilter())  # the default: model.tool_call_parser none
    assert report.added == 1
    assert report.skipped == {"unsupported_tools": 4 + len(KEPT), "unsupported_context": 1, "unsupported_content": 1}
    assert not report.dead_lettered


def test_call_arguments_nested_past_the_parsers_depth_are_kept_as_text_not_a_crash():
    deep = ToolCall("c1", "get_weather", "[" * 100_000 + "]" * 100_000)
    record = PromptRecord("r", "t", (ASK, Message("assistant", "", (deep,)), Message("tool", "1", tool_call_id="c1")))
    assert deep.parsed_arguments() is None and record.prompt_hash  # hashed on the text as written
    assert Redactor(["secrets"]).record(record).messages[1].tool_calls[0].arguments == deep.arguments

"""Agent traffic and the newer APIs, as a production endpoint logs them (the shapes of the issue's table): what
taoflow can store faithfully is parsed whole (an Anthropic system prompt, Responses instructions and message
items); what it cannot yet (tool definitions, tool calls, tool results, a stored conversation it cannot see) is
refused as `UnsupportedRecord` with its reason, never stored without its tools or calls; ingest counts those as
skipped, not dead letters."""

import json

import pytest

from taoflow.connectors.errors import UnsupportedRecord
from taoflow.connectors.records import Message
from taoflow.connectors.sources.formats import parse_payload
from taoflow.connectors.sources.jsonl import JsonlSource
from taoflow.daemon.ingest.ingestor import Ingestor

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}

REFUSED = {
    # An OpenAI chat request with tools, its answer a tool call.
    "chat_with_tools": {
        "request": {
            "model": "agent",
            "messages": [{"role": "user", "content": "Weather in Paris?"}],
            "tools": [WEATHER],
        },
        "response": {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [CALL]}}]},
    },
    # The same answer without the tools in the logged request (a log that trimmed them).
    "answer_is_a_tool_call": {
        "request": {"model": "agent", "messages": [{"role": "user", "content": "Weather in Paris?"}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [CALL]}}]},
    },
    # Multi-turn: user, the assistant's tool call, the tool's result.
    "multi_turn_tool_result": {
        "request": {
            "model": "agent",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
            ],
        }
    },
    "legacy_function_call": {
        "request": {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
                {"role": "function", "name": "f", "content": "21"},
            ]
        }
    },
    "anthropic_tool_use": {
        "request": {
            "model": "claude-like",
            "system": "You are an agent.",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "21"}]},
            ],
        }
    },
    "responses_function_call": {
        "request": {
            "model": "agent",
            "input": [
                {"role": "user", "content": "Weather in Paris?"},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "21"},
            ],
        }
    },
    "responses_answer_is_a_call": {
        "request": {"model": "agent", "input": "Weather in Paris?"},
        "response": {"object": "response", "output": [{"type": "function_call", "name": "w", "arguments": "{}"}]},
    },
    "databricks_row_with_tools": {
        "databricks_request_id": "dbx-1",
        "timestamp_ms": 1763700000123,
        "status_code": 200,
        "request": json.dumps({"messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER]}),
    },
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_tool_traffic_is_refused_with_its_reason_never_stored_without_its_tools(name):
    with pytest.raises(UnsupportedRecord) as info:
        parse_payload(json.dumps(REFUSED[name]))
    assert info.value.reason == "unsupported_tools" and "not stored yet" in str(info.value)


def test_a_responses_request_continuing_a_stored_one_is_refused():
    with pytest.raises(UnsupportedRecord) as info:
        parse_payload(json.dumps({"request": {"input": "And tomorrow?", "previous_response_id": "resp_1"}}))
    assert info.value.reason == "unsupported_context"


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


def test_ingest_counts_refused_agent_traffic_as_skipped_not_dead_letters(tmp_path, state):
    logs = tmp_path / "agents.jsonl"
    plain = {"request": {"model": "agent", "messages": [{"role": "user", "content": "What is 2 + 2?"}]}}
    logs.write_text("\n".join(json.dumps(r) for r in [plain, *REFUSED.values()]) + "\n")
    report = Ingestor(state.buffer, source="jsonl").run(JsonlSource([logs]).read())
    assert report.added == 1
    assert report.skipped == {"unsupported_tools": len(REFUSED)}
    assert not report.dead_lettered

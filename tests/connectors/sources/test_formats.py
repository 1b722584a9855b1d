"""Parsers on real-shaped records: OpenAI chat exchanges and Databricks inference-table rows."""

import gzip
import json

import pytest

from taoflow.connectors.errors import RecordError
from taoflow.connectors.sources.formats import MAX_RECORD_BYTES, parse_payload

OPENAI_EXCHANGE = {
    "request": {
        "model": "support-bot",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Reset my"}, {"type": "text", "text": "password"}]},
        ],
        "temperature": 0.2,
    },
    "response": {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1763700000,
        "model": "support-bot",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Use the link."}, "finish_reason": "stop"}
        ],
    },
}

DATABRICKS_LEGACY = {
    "databricks_request_id": "7b9c7a3e-1111",
    "client_request_id": None,
    "date": "2026-11-20",
    "timestamp_ms": 1763700000123,
    "status_code": 200,
    "execution_time_ms": 412,
    "sampling_fraction": 1.0,
    "request": json.dumps({"messages": [{"role": "user", "content": "What is 2 + 2?"}], "max_tokens": 64}),
    "response": json.dumps({"choices": [{"message": {"role": "assistant", "content": "4"}}]}),
    "request_metadata": {"endpoint_name": "math-endpoint", "model_name": "m", "model_version": "3"},
}

DATABRICKS_GATEWAY = {
    "request_date": "2026-11-20",
    "databricks_request_id": "gw-1",
    "client_request_id": "client-9",
    "request_time": "2026-11-20T10:00:00.000Z",
    "status_code": 200,
    "sampling_fraction": 0.5,
    "execution_duration_ms": 230,
    "request": {"messages": [{"role": "user", "content": "Summarise"}]},
    "response": None,
    "served_entity_id": "entity-123",
    "logging_error_codes": [],
    "requester": "alice@example.com",
}


def test_openai_exchange():
    record = parse_payload(json.dumps(OPENAI_EXCHANGE).encode())
    assert record.request_id == "chatcmpl-abc123"
    assert record.task == "support-bot"
    assert [m.role for m in record.messages] == ["system", "user"]
    assert record.messages[1].content == "Reset my\npassword"
    assert record.response == "Use the link."
    assert record.timestamp == 1763700000


def test_openai_request_body_alone_gets_a_stable_content_id():
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    first, second = parse_payload(body), parse_payload(body)
    assert first.request_id == second.request_id
    assert first.request_id.startswith("sha256:")
    assert first.response is None


def test_databricks_legacy_row():
    record = parse_payload(json.dumps(DATABRICKS_LEGACY))
    assert record.request_id == "7b9c7a3e-1111"
    assert record.task == "math-endpoint"
    assert record.timestamp == pytest.approx(1763700000.123)
    assert record.response == "4"
    assert record.metadata["status_code"] == 200
    assert record.metadata["model_version"] == "3"


def test_databricks_ai_gateway_row():
    record = parse_payload(json.dumps(DATABRICKS_GATEWAY), default_task="fallback")
    assert record.task == "entity-123"
    assert record.request_id == "gw-1"
    assert record.timestamp == 1795168800.0  # 2026-11-20T10:00:00Z
    assert record.response is None
    assert record.metadata["requester"] == "alice@example.com"


def test_default_task_when_nothing_names_one():
    record = parse_payload(json.dumps({"messages": [{"role": "user", "content": "x"}]}), default_task="misc")
    assert record.task == "misc"


def test_export_round_trip():
    record = parse_payload(json.dumps(OPENAI_EXCHANGE))
    assert parse_payload(record.to_json()) == record


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b'{"request": {"messages": [', "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_encoding"),
        (b'["a list"]', "not_an_object"),
        (b'{"hello": "world"}', "unsupported_shape"),
        (b'{"request": {"messages": []}}', "no_messages"),
        (b'{"request": {"messages": [{"role": "wizard", "content": "x"}]}}', "bad_message"),
        (b'{"request": {"messages": [{"role": "user", "content": 5}]}}', "bad_message"),
        (
            b'{"request": {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}}',
            "bad_message",
        ),
        (b'{"request": {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}}', "unsupported_content"),
        (b'{"databricks_request_id": "x", "request": "{broken", "status_code": 200}', "invalid_request_json"),
        (b'{"databricks_request_id": "x", "request": 42}', "bad_request"),
        (b'{"request": {"messages": [{"role": "user", "content": "q"}]}, "timestamp": "yesterday"}', "bad_timestamp"),
        (gzip.compress(b'{"a": 1}'), "invalid_encoding"),
        (b"x" * (MAX_RECORD_BYTES + 1), "too_large"),
    ],
)
def test_malformed_records_raise_a_reason(payload, reason):
    with pytest.raises(RecordError) as info:
        parse_payload(payload)
    assert info.value.reason == reason

"""Capture records, stream assembly, sampling, and the spool with a sink that fails."""

import asyncio
import json
import stat
import threading

import pytest

from taoflow.connectors.errors import TemporaryError
from taoflow.connectors.sinks.jsonl import JsonlSink
from taoflow.connectors.sources.formats import parse_payload
from taoflow.connectors.sources.redaction import Redactor
from taoflow.daemon.gateway.capture import Drainer, wanted
from taoflow.daemon.gateway.captured import (
    MAX_LARGE_PENDING,
    Backlog,
    RecordBuilder,
    RecordFacts,
    assemble_stream,
    build_record,
    exchange_record,
)
from taoflow.daemon.store.spool import Spool
from taoflow.policies.ingest_filter import IngestFilter, decide_ingest


def sse(*events) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_a_chat_stream_adds_up_to_the_completion_it_streamed():
    body = sse(
        {"id": "c1", "created": 5, "model": "v1", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {
            "id": "c1",
            "choices": [{"index": 0, "delta": {"content": "The answer"}}, {"index": 1, "delta": {"content": "4"}}],
        },
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": " is 42."}, "finish_reason": "stop"}]},
        {"id": "c1", "choices": [{"index": 1, "delta": {"content": "2"}, "finish_reason": "length"}]},
        {"id": "c1", "choices": [], "usage": {"completion_tokens": 6}},
    )
    completion = assemble_stream(body + b"data: {broken\n\n", endpoint="chat")
    assert completion["id"] == "c1" and completion["model"] == "v1" and completion["usage"] == {"completion_tokens": 6}
    assert completion["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "The answer is 42."}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "42"}, "finish_reason": "length"},
    ]
    text = assemble_stream(
        sse({"choices": [{"index": 0, "text": "a"}]}, {"choices": [{"text": "b"}]}), endpoint="completions"
    )
    assert text["choices"][0]["text"] == "ab"
    assert assemble_stream(b"data: [1, 2]\n\nnot an event\n", endpoint="chat")["choices"] == []


def test_a_chat_stream_of_tool_calls_adds_up_to_the_calls_and_parses_back_whole():
    def call_delta(index, **fields):
        return {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, **fields}]}}]}

    body = sse(
        {"id": "c2", "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
        call_delta(0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""}),
        call_delta(0, function={"arguments": '{"city": '}),
        call_delta(1, id="call_b", type="function", function={"name": "get_time", "arguments": '{"city": "Oslo"}'}),
        call_delta(0, function={"arguments": '"Paris"}'}),
        {"id": "c2", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    )
    completion = assemble_stream(body, endpoint="chat")
    (choice,) = completion["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == ""
    assert choice["message"]["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"city": "Oslo"}'}},
    ]
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    clock = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    request = {"model": "bot", "messages": [{"role": "user", "content": "Paris weather, Oslo time?"}]}
    record = parse_payload(
        json.dumps({"request": {**request, "tools": [weather, clock]}, "response": completion}), default_task="t"
    )
    assert [(c.id, c.name, c.arguments) for c in record.response_calls] == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_time", '{"city": "Oslo"}'),
    ]


def events(*pairs) -> bytes:
    """A stream of named events, as the Responses and Messages APIs send them (no [DONE])."""
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in pairs)


def test_a_responses_stream_is_its_final_response_and_nothing_before_it_ends():
    final = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "4"}]}],
    }
    body = events(
        (
            "response.created",
            {"type": "response.created", "response": {**final, "output": [], "status": "in_progress"}},
        ),
        ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "4", "output_index": 0}),
        ("response.completed", {"type": "response.completed", "response": final}),
    )
    assert assemble_stream(body, endpoint="responses") == final
    cut = body[: body.index(b"event: response.completed")]  # the replica died before the end
    assert assemble_stream(cut, endpoint="responses") is None


def test_a_messages_stream_adds_up_to_its_message_with_text_and_tool_calls():
    def ev(kind, **fields):
        return kind, {"type": kind, **fields}

    head = {"id": "m1", "type": "message", "role": "assistant", "content": [], "usage": {"input_tokens": 9}}
    tool = {"type": "tool_use", "id": "t1", "name": "weather", "input": {}}
    body = events(
        ev("message_start", message=head),
        ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Let me"}),
        ev("content_block_delta", index=0, delta={"type": "text_delta", "text": " check."}),
        ev("content_block_start", index=1, content_block=tool),
        ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '{"city": '}),
        ev("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '"Paris"}'}),
        ev("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 7}),
        ev("message_stop"),
    )
    message = assemble_stream(body, endpoint="messages")
    assert message["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
    ]
    assert message["stop_reason"] == "tool_use" and message["usage"] == {"input_tokens": 9, "output_tokens": 7}
    # Input JSON the stream never finished is kept as streamed: the call's arguments are the text it got.
    cut = body.replace(json.dumps('"Paris"}').encode(), json.dumps('"Par').encode())
    request = {"system": "s", "messages": [{"role": "user", "content": "Weather?"}]}
    answer = parse_payload(json.dumps({"request": request, "response": assemble_stream(cut, endpoint="messages")}))
    assert [(c.id, c.arguments) for c in answer.response_calls] == [("t1", '{"city": "Par')]
    assert assemble_stream(b"event: ping\ndata: {}\n\n", endpoint="messages") is None


def test_a_record_parses_as_an_inference_table_row_and_is_redacted():
    request = {"model": "bot", "messages": [{"role": "user", "content": "Mail me at ann@example.com: 2+2?"}]}
    response = {"choices": [{"message": {"role": "assistant", "content": "4, ann@example.com"}}]}
    raw = exchange_record(
        request_id="r-1",
        task="math",
        request=request,
        status=200,
        response=response,
        started=1_700_000_000.5,
        latency_s=0.25,
        model="bot",
        version="v3",
        replica="http://a",
        gateway="gw",
        redactor=Redactor(["emails"]),
    )
    assert b"ann@example.com" not in raw
    record = parse_payload(raw)
    assert (record.request_id, record.task, record.response) == ("r-1", "math", "4, [EMAIL]")
    assert record.timestamp == 1_700_000_000.5 and record.metadata["status_code"] == 200
    assert record.metadata["served_version"] == "v3" and "[EMAIL]" in record.messages[0].content


def facts(request_id: str) -> RecordFacts:
    return RecordFacts(request_id, "math", "chat", 200, 1_700_000_000.0, 0.1, "bot", "v3", "http://a", "gw")


def answer(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


def test_records_are_built_off_the_event_loop_a_large_one_in_a_process_of_its_own():
    secret = "sk-proj-abcdefghijklmnopqrstuvwx"
    small = {"model": "bot", "messages": [{"role": "user", "content": f"my key is {secret}"}]}
    large = {"model": "bot", "messages": [{"role": "user", "content": f"{secret} " + "eyJ-" * (1 << 18)}]}
    builder = RecordBuilder(("secrets",))

    async def both() -> tuple[bytes | None, bool, bytes | None]:
        first = await builder.build(facts("r-1"), small, answer(secret), size=200, streamed=False)
        in_process = builder._pool is not None
        second = await builder.build(facts("r-2"), large, answer("ok"), size=1 << 20, streamed=False)
        return first, in_process, second

    try:
        first, small_in_process, second = asyncio.run(both())
        assert not small_in_process and builder._pool is not None  # the small one on a thread, the large elsewhere
    finally:
        builder.close()
    assert first is not None and second is not None
    assert secret.encode() not in first + second and first.count(b"[SECRET]") == 2
    assert json.loads(second)["request"]["messages"][0]["content"].startswith("[SECRET] eyJ-eyJ-")
    assert build_record(facts("r-3"), small, b"not json", streamed=False, kinds=()) is None  # unparseable 200


def test_large_records_beyond_the_backlog_are_refused_not_queued():
    builder = RecordBuilder(("secrets",))
    large = {"model": "bot", "messages": [{"role": "user", "content": "x" * (1 << 17)}]}

    async def flood() -> list[object]:
        builds = [
            builder.build(facts(f"r-{i}"), large, answer("ok"), size=1 << 17, streamed=False)
            for i in range(MAX_LARGE_PENDING + 1)
        ]
        return await asyncio.gather(*builds, return_exceptions=True)

    try:
        results = asyncio.run(flood())
    finally:
        builder.close()
    assert [isinstance(r, Backlog) for r in results] == [False] * MAX_LARGE_PENDING + [True]
    assert all(isinstance(r, bytes) for r in results[:MAX_LARGE_PENDING])


def test_sampling_is_by_request_id_so_every_gateway_agrees():
    ids = [f"req-{i}" for i in range(2000)]
    kept = [i for i in ids if wanted(i, "t", rate=0.25, task_rates={})]
    assert 400 < len(kept) < 600
    assert kept == [i for i in ids if wanted(i, "t", rate=0.25, task_rates={})]
    assert not any(wanted(i, "quiet", rate=1.0, task_rates={"quiet": 0.0}) for i in ids[:50])


def test_the_spool_survives_a_restart_and_refuses_past_its_cap(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_bytes=100_000)
    futures = [spool.put(f"r{i}", b"x" * 1000, float(i)) for i in range(120)]
    results = [f.result(timeout=10) for f in futures]
    assert results.count(True) == 100 and results[100:] == [False] * 20  # the oldest are kept, the newest refused
    spool.close()
    reopened = Spool(tmp_path / "spool.db", max_bytes=100_000)
    depth = reopened.depth()
    assert (depth.records, depth.bytes, depth.oldest_at) == (100, 100_000, 0.0)
    batch = reopened.batch(30)
    assert [r.key for r in batch] == [f"r{i}" for i in range(30)]
    reopened.remove(batch)
    assert reopened.depth().records == 70 and reopened.put("more", b"y" * 1000, 1.0).result(timeout=10)
    reopened.close()


class Flaky:
    """A real JSON-lines sink that fails on demand (a full disk, an outage): the fault a real file cannot
    produce when asked."""

    name = "flaky"

    def __init__(self, sink):
        self.sink = sink
        self.down = threading.Event()

    def send(self, records):
        if self.down.is_set():
            raise TemporaryError("down")
        self.sink.send(records)

    def close(self):
        pass


def test_records_wait_in_the_spool_while_the_sink_is_down_and_are_sent_once_it_is_back(tmp_path):
    spool = Spool(tmp_path / "spool.db", max_bytes=1 << 20)
    sink = Flaky(JsonlSink(tmp_path / "out", gateway="gw"))
    sent = []
    drainer = Drainer(spool, sink, batch_records=7, flush_s=0.05, on_sent=sent.append, max_backoff_s=0.1)
    sink.down.set()
    drainer.start()
    for i in range(25):
        assert spool.put(f"r{i}", json.dumps({"i": i}).encode(), 1e9 + i).result(timeout=10)
    with pytest.raises(TemporaryError):
        drainer.drain_once()
    assert spool.depth().records == 25 and not sent
    sink.down.clear()
    left = drainer.finish(10.0)
    assert left.records == 0 and sum(sent) == 25
    lines = [
        json.loads(line) for f in sorted((tmp_path / "out").glob("*.jsonl")) for line in f.read_text().splitlines()
    ]
    assert sorted(line["i"] for line in lines) == list(range(25))
    spool.close()


def test_with_a_sampling_key_a_client_cannot_pick_request_ids_that_are_always_captured():
    """Finding: ids found in ~10 tries each were captured 100 % at sample_rate 0.1 (a plain hash of the id)."""
    found = [f"req-{i}" for i in range(5000) if wanted(f"req-{i}", "t", rate=0.1, task_rates={})][:200]
    assert len(found) == 200  # what an attacker finds offline against the plain hash
    key = b"the-gateway-token-both-sides-hold"
    kept = [i for i in found if wanted(i, "t", rate=0.1, task_rates={}, key=key)]
    assert len(kept) < 40  # about a tenth, as for anyone
    assert kept == [i for i in found if wanted(i, "t", rate=0.1, task_rates={}, key=key)]  # every gateway agrees
    rules = IngestFilter(sample_rates={"t": 0.1}, sample_key=key)  # ... and so does the daemon's ingest
    assert all(decide_ingest(request_id=i, task="t", status_code=200, prompt_chars=5, rules=rules).keep for i in kept)


def test_the_spool_and_the_captured_lines_are_the_owners_alone(tmp_path):
    """Finding: prompt text sat in 0644 files (the spool, the capture JSON lines)."""
    spool = Spool(tmp_path / "spool" / "spool.db", max_bytes=100_000)
    assert spool.put("r1", b'{"prompt": "private"}', 1.0).result(timeout=10)
    sink = JsonlSink(tmp_path / "captured", gateway="gw")
    sink.send(spool.batch(10))
    spool.close()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*tmp_path.rglob("*")]}
    assert modes["spool"] == modes["captured"] == 0o700
    assert {m for name, m in modes.items() if name not in ("spool", "captured")} == {0o600}, modes


def test_token_ids_a_replica_returned_are_assembled_and_kept_for_replay():
    first = {"content": [{"token": "4", "logprob": -0.1}]}
    second = {"content": [{"token": "2", "logprob": 0.0}]}
    body = sse(
        {"id": "c3", "prompt_token_ids": [1, 2, 3], "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"id": "c3", "choices": [{"index": 0, "delta": {"content": "4"}, "token_ids": [52], "logprobs": first}]},
        {"id": "c3", "choices": [{"index": 0, "delta": {"content": "2"}, "token_ids": [50], "logprobs": second}]},
    )
    completion = assemble_stream(body, endpoint="chat")
    assert completion["prompt_token_ids"] == [1, 2, 3] and completion["choices"][0]["token_ids"] == [52, 50]
    # The capture is redacted before it is spooled: numbers under a sensitive-looking key are kept.
    redacted = Redactor(["secrets", "emails"]).value("response", completion)
    assert redacted["prompt_token_ids"] == [1, 2, 3] and redacted["choices"][0]["token_ids"] == [52, 50]
    request = {"model": "bot", "messages": [{"role": "user", "content": "2 * 21?"}], "return_token_ids": True}
    record = parse_payload(json.dumps({"request": request, "response": completion}))
    assert record.metadata["replay"] == {"prompt_ids": [1, 2, 3], "completion_ids": [52, 50], "logprobs": [-0.1, 0.0]}
    assert Redactor(["secrets", "emails", "phones"]).record(record).metadata["replay"] == record.metadata["replay"]
    plain = parse_payload(json.dumps({"request": request, "response": {"choices": [{"message": {"content": "42"}}]}}))
    assert "replay" not in plain.metadata

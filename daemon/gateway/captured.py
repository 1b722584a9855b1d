"""A captured exchange's record: the response assembled (a stream into the completion it adds up to), the request
and response redacted, the Databricks inference-table row that taoflow's sources parse. Built off the gateway's event
loop (`RecordBuilder`): redacting a megabyte takes a good part of a second, and every other request would wait.

Small records are built on a thread (a regex call is bounded to a window of the text, so the event loop gets the
interpreter back every few milliseconds); large ones in a process of their own, so they take no interpreter time
from the event loop at all, and only a few at a time (the rest are dropped as `backlog`: an attacker's megabytes
cost the attacker, not memory).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import orjson

from taoflow.connectors.sources.redaction import Redactor

__all__ = ["Backlog", "RecordBuilder", "RecordFacts", "assemble_stream", "build_record", "exchange_record"]

#: Most `data:` events of one stream assembled (a stream of more is captured cut, marked truncated).
_MAX_EVENTS = 100_000
#: Records larger than this (request and response bytes, with redaction on) are built in the redaction process.
INLINE_BYTES = 64 << 10
#: Large records waiting for, or in, the redaction process; more are dropped as `backlog`.
MAX_LARGE_PENDING = 4


@dataclass(frozen=True)
class RecordFacts:
    """What a captured record says besides the request and the response."""

    request_id: str
    task: str
    endpoint: str  # chat, completions, responses or messages
    status: int
    started: float  # Unix time
    latency_s: float
    model: str
    version: str
    replica: str
    gateway: str


class Backlog(Exception):
    """Too many large records are waiting for redaction: this one is not captured."""


def _events(body: bytes) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent-event stream's `data:` lines, up to `[DONE]` (at most _MAX_EVENTS)."""
    for count, line in enumerate(body.split(b"\n")):
        if count > _MAX_EVENTS:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict):
            yield event


def assemble_stream(body: bytes, *, endpoint: str) -> dict[str, Any] | None:
    """A stream as the object a non-streamed answer of its endpoint would have been (None: the stream never got
    that far, e.g. a Responses stream without its final `response.completed`)."""
    if endpoint == "responses":
        return _assemble_responses(body)
    if endpoint == "messages":
        return _assemble_messages(body)
    return _assemble_openai(body, chat=endpoint == "chat")


def _assemble_responses(body: bytes) -> dict[str, Any] | None:
    """OpenAI Responses: the final event (completed, incomplete or failed) carries the whole response."""
    final = None
    for event in _events(body):
        if event.get("type") in ("response.completed", "response.incomplete", "response.failed"):
            final = event.get("response")
    return final if isinstance(final, dict) else None


def _assemble_messages(body: bytes) -> dict[str, Any] | None:
    """Anthropic Messages: message_start's message, its content blocks built from their deltas (text, a tool
    call's input JSON, thinking), message_delta's stop reason and usage."""
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, list[str]] = {}
    for event in _events(body):
        kind = event.get("type")
        raw = event.get("index")
        index = raw if isinstance(raw, int) else 0
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message = dict(event["message"])
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            blocks[index] = dict(event["content_block"])
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict) and index in blocks:
            delta, block = event["delta"], blocks[index]
            for key, field in (("text", "text"), ("thinking", "thinking"), ("signature", "signature")):
                if isinstance(delta.get(key), str):
                    block[field] = str(block.get(field) or "") + delta[key]
            if isinstance(delta.get("partial_json"), str):
                partial.setdefault(index, []).append(delta["partial_json"])
        elif kind == "message_delta" and message is not None:
            if isinstance(event.get("delta"), dict):
                message.update({k: v for k, v in event["delta"].items() if k in ("stop_reason", "stop_sequence")})
            if isinstance(event.get("usage"), dict):
                message["usage"] = {**(message.get("usage") or {}), **event["usage"]}
    if message is None:
        return None
    for index, pieces in partial.items():
        try:
            blocks[index]["input"] = orjson.loads("".join(pieces))
        except orjson.JSONDecodeError:
            blocks[index]["input_json"] = "".join(pieces)  # kept as streamed: a parser refuses what it is not
    message["content"] = [blocks[i] for i in sorted(blocks)]
    return message


def _assemble_openai(body: bytes, *, chat: bool) -> dict[str, Any]:
    """An OpenAI chat or completions stream as the completion object it adds up to (every choice, with the tool
    calls its deltas build: id, name and the arguments' pieces joined)."""
    texts: dict[int, list[str]] = {}
    calls: dict[int, dict[int, dict[str, Any]]] = {}
    ids: dict[int, list[int]] = {}
    logprobs: dict[int, list[Any]] = {}
    finish: dict[int, Any] = {}
    head: dict[str, Any] = {}
    usage = None
    for event in _events(body):
        if not head:
            head = {k: event[k] for k in ("id", "created", "model") if k in event}
        if isinstance(event.get("prompt_token_ids"), list) and "prompt_token_ids" not in head:
            head["prompt_token_ids"] = event["prompt_token_ids"]
        if isinstance(event.get("usage"), dict):
            usage = event["usage"]
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0) if isinstance(choice.get("index"), int) else 0
            raw_delta = choice.get("delta")
            delta: dict[str, Any] = raw_delta if isinstance(raw_delta, dict) else {}
            piece = delta.get("content") if chat else choice.get("text")
            if isinstance(piece, str):
                texts.setdefault(index, []).append(piece)
            if chat and isinstance(delta.get("tool_calls"), list):
                _add_call_deltas(calls.setdefault(index, {}), delta["tool_calls"])
            if isinstance(choice.get("token_ids"), list):
                ids.setdefault(index, []).extend(choice["token_ids"])
            chunk_logprobs = choice.get("logprobs")
            if isinstance(chunk_logprobs, dict) and isinstance(chunk_logprobs.get("content"), list):
                logprobs.setdefault(index, []).extend(chunk_logprobs["content"])
            if choice.get("finish_reason") is not None:
                finish[index] = choice["finish_reason"]
    choices = []
    for index in sorted(set(texts) | set(finish) | set(calls)):
        text = "".join(texts.get(index, ()))
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls.get(index):
            message["tool_calls"] = [calls[index][k] for k in sorted(calls[index])]
        body_of = {"message": message} if chat else {"text": text}
        choices.append({"index": index, **body_of, "finish_reason": finish.get(index)})
        if index in ids:
            choices[-1]["token_ids"] = ids[index]
        if index in logprobs:
            choices[-1]["logprobs"] = {"content": logprobs[index]}
    completion = {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices}
    if usage is not None:
        completion["usage"] = usage
    return completion


def _add_call_deltas(calls: dict[int, dict[str, Any]], deltas: list[Any]) -> None:
    """A chunk's tool-call deltas onto the calls so far: the first names the call, the rest add arguments."""
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index")
        key = index if isinstance(index, int) else len(calls)
        call = calls.setdefault(key, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if isinstance(delta.get("id"), str):
            call["id"] = delta["id"]
        raw = delta.get("function")
        function: dict[str, Any] = raw if isinstance(raw, dict) else {}
        for field in ("name", "arguments"):
            if isinstance(function.get(field), str):
                call["function"][field] += function[field]


def exchange_record(
    *,
    request_id: str,
    task: str,
    request: Mapping[str, Any],
    status: int,
    response: Mapping[str, Any] | None,
    started: float,
    latency_s: float,
    model: str,
    version: str,
    replica: str,
    gateway: str,
    redactor: Redactor,
) -> bytes:
    metadata = {"model_name": model, "served_version": version, "replica": replica, "gateway": gateway}
    record = {
        "databricks_request_id": request_id,
        "timestamp_ms": int(started * 1000),
        "status_code": status,
        "execution_time_ms": int(latency_s * 1000),
        "task": task,
        "request": redactor.value("request", dict(request)) if redactor.enabled else request,
        "response": (redactor.value("response", dict(response)) if redactor.enabled else response)
        if response is not None
        else None,
        "request_metadata": metadata,
    }
    return orjson.dumps(record)


def build_record(
    facts: RecordFacts, request: Mapping[str, Any], kept: bytes, *, streamed: bool, kinds: tuple[str, ...]
) -> bytes | None:
    """The record's bytes, or None for a successful answer that does not parse (nothing to learn from)."""
    try:
        response = assemble_stream(kept, endpoint=facts.endpoint) if streamed else orjson.loads(kept)
    except orjson.JSONDecodeError:
        response = None
    if response is not None and not isinstance(response, dict):
        response = None
    if response is None and facts.status == 200:
        return None
    return exchange_record(
        request_id=facts.request_id,
        task=facts.task,
        request=request,
        status=facts.status,
        response=response,
        started=facts.started,
        latency_s=facts.latency_s,
        model=facts.model,
        version=facts.version,
        replica=facts.replica,
        gateway=facts.gateway,
        redactor=Redactor(kinds),
    )


class RecordBuilder:
    """Builds records off the event loop: a thread for small ones, a process for large ones (with redaction on)."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = kinds
        self._pool: ProcessPoolExecutor | None = None
        self._large = 0

    async def build(
        self, facts: RecordFacts, request: Mapping[str, Any], kept: bytes, *, size: int, streamed: bool
    ) -> bytes | None:
        """The record (None: unparseable); raises Backlog when a large one finds the redaction process busy."""
        if not self.kinds or size <= INLINE_BYTES:
            return await asyncio.to_thread(build_record, facts, request, kept, streamed=streamed, kinds=self.kinds)
        if self._large >= MAX_LARGE_PENDING:
            raise Backlog
        self._large += 1
        try:
            future = self._process().submit(build_record, facts, request, kept, streamed=streamed, kinds=self.kinds)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._pool = None  # the process died (killed, out of memory): the next large record starts another
            raise
        finally:
            self._large -= 1

    def _process(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: a fresh interpreter that imports only this module's needs, not whatever the gateway's main
            # module drags in.
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

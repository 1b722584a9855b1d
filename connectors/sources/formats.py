"""Parsers from inference-log shapes to `PromptRecord`.

Shapes understood (detected from the keys present):

* OpenAI chat completions: a request body (`{"model", "messages", ...}`), or a logged
  exchange `{"request": {...}, "response": {...}}` with optional `id`, `task`,
  `timestamp`, `metadata` beside them.
* Databricks inference tables, legacy model-serving columns (`databricks_request_id`,
  `timestamp_ms`, `status_code`, `request`, `response`, `request_metadata`) and
  AI Gateway columns (`request_time`, `served_entity_id`, `execution_duration_ms`,
  `requester`, ...). `request`/`response` may be JSON strings or objects.
* Anthropic Messages requests (top-level `system`, `text` content blocks) and responses.
* OpenAI Responses requests (`instructions`, `input` as text or message items) and responses (`output` items).
* taoflow's own export shape (`PromptRecord.to_json`).

Agent traffic is stored whole (`tool_shapes` reads each API's tools and calls): tool definitions and `tool_choice`,
assistant tool calls (`tool_calls`, legacy `function_call`, `tool_use` blocks, `function_call` items), tool results
(`tool` and legacy `function` messages, `tool_result` blocks, `function_call_output` items) and an answer that is a
call. What cannot be held faithfully is refused with its reason (`UnsupportedRecord`: `unsupported_tools` for hosted
tools and error-flagged results, `unsupported_context` for a Responses request that continues a stored one through
`previous_response_id`; ingest skips and counts them), never stored altered.

Every failure raises `RecordError` with a short reason; the caller dead-letters it.
Decoded JSON objects are plain dicts and are checked as such: this runs for every
ingested record, and `isinstance(x, dict)` is several times cheaper than the ABC.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from taoflow.connectors.errors import ConfigurationError, RecordError, UnsupportedRecord
from taoflow.connectors.records import ROLES, Message, PromptRecord, Tool, ToolCall
from taoflow.connectors.sources import tool_shapes

__all__ = ["MAX_RECORD_BYTES", "check_columns", "parse_payload", "parse_record", "remap"]

MAX_RECORD_BYTES = 1 << 20
_DATABRICKS_KEYS = {"databricks_request_id", "request_metadata", "served_entity_id", "timestamp_ms"}


def parse_payload(
    payload: bytes | str, *, default_task: str = "default", field_map: Mapping[str, str] | None = None
) -> PromptRecord:
    """Decode one raw log record (UTF-8 JSON) and parse it (through `field_map` for other shapes)."""
    if len(payload) > MAX_RECORD_BYTES:
        raise RecordError("too_large", f"{len(payload)} bytes > {MAX_RECORD_BYTES}")
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError("invalid_encoding", str(exc)) from None
    if not payload.strip():
        raise RecordError("empty", "record has no content")
    data = _loads(payload, "invalid_json")
    if field_map:
        data = remap(data, field_map)
    return parse_record(data, default_task=default_task, raw=payload)


def _loads(text: str | bytes, reason: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    # json accepts what orjson refuses (NaN, integers past 64 bits) and names the place of a real error; it also
    # accepts what must not pass: nesting deep enough to exhaust the stack, integers of thousands of digits,
    # lone surrogates (text that cannot be stored as UTF-8).
    try:
        data = json.loads(text)
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise RecordError("too_deep", "JSON nested deeper than the parser allows") from None
    except UnicodeError as exc:  # before ValueError, of which it is one
        raise RecordError("invalid_encoding", f"text that is not valid Unicode: {str(exc)[:200]}") from None
    except ValueError as exc:  # a JSONDecodeError, or an integer past the digit limit
        raise RecordError(reason, str(exc)[:200]) from None
    return data


def check_columns(columns: Collection[str], field_map: Mapping[str, str] | None = None) -> None:
    """A table (Delta, Parquet) whose columns can hold a prompt of a known shape, or one ConfigurationError that
    names its columns: rather than a dead letter for each of its rows."""
    names = set(columns)
    if field_map:
        roots = {path.split(".")[0] for key, path in field_map.items() if key in ("messages", "prompt")}
        if not roots or roots & names:
            return
        wanted = f"the field map reads prompts from {sorted(roots)}"
    elif names & {"request", "messages", "prompt"}:
        return
    else:
        wanted = (
            "a Databricks inference table has `request` (with databricks_request_id, timestamp_ms, status_code, "
            "response, request_metadata), an OpenAI chat log `request` or `messages`"
        )
    raise ConfigurationError(
        f"the table has no column a prompt can come from: {wanted}; its columns are {sorted(names)[:30]}. "
        "Map its columns with the source's field_map"
    )


def remap(data: Any, field_map: Mapping[str, str]) -> dict[str, Any]:
    """Read a record of another shape through dotted paths, e.g. {"messages": "body.chat", "task": "meta.app"}."""
    if not isinstance(data, dict):
        raise RecordError("not_an_object", f"expected a JSON object, got {type(data).__name__}")
    found = {key: _path(data, path) for key, path in field_map.items()}
    request = {k: found[k] for k in ("messages", "prompt") if found.get(k) is not None}
    out: dict[str, Any] = {"request": request}
    for key in ("request_id", "task", "timestamp"):
        if found.get(key) is not None:
            out[key] = str(found[key]) if key != "timestamp" else found[key]
    if isinstance(found.get("response"), str):
        out["response"] = {"choices": [{"message": {"role": "assistant", "content": found["response"]}}]}
    if found.get("status_code") is not None:
        out["metadata"] = {"status_code": found["status_code"]}
    return out


def _path(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if isinstance(node, str) and node.lstrip().startswith("{"):
            try:
                node = json.loads(node)  # a nested JSON string, as inference tables store request bodies
            except json.JSONDecodeError:
                return None
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_record(data: Any, *, default_task: str = "default", raw: str | None = None) -> PromptRecord:
    """Parse an already-decoded record of any supported shape."""
    if not isinstance(data, dict):
        raise RecordError("not_an_object", f"expected a JSON object, got {type(data).__name__}")
    if _DATABRICKS_KEYS & data.keys() or ("request_time" in data and "request" in data):
        return _from_databricks(data, default_task, raw)
    if "request" in data:
        return _from_openai_exchange(data, default_task, raw)
    if "messages" in data and "task" in data and "request_id" in data:
        return _from_export(data)
    if "messages" in data or "prompt" in data or "input" in data:
        return _from_openai_exchange({"request": data}, default_task, raw)
    raise RecordError("unsupported_shape", f"no request or messages among keys {sorted(data)[:8]}")


def _from_openai_exchange(data: Mapping[str, Any], default_task: str, raw: str | None) -> PromptRecord:
    request = _json_field(data, "request")
    response = _json_field(data, "response") if data.get("response") is not None else None
    metadata = dict(data.get("metadata") or {}) if isinstance(data.get("metadata"), dict) else {}
    request_id = _first_str(data, "request_id", "id") or _first_str(response or {}, "id")
    task = _first_str(data, "task") or _first_str(metadata, "task") or _first_str(request, "model")
    created = (response or {}).get("created")
    return _record(
        request,
        response,
        request_id=request_id or _content_id(raw, request),
        task=task or default_task,
        timestamp=_timestamp(data.get("timestamp") or created),
        metadata=metadata,
    )


def _from_databricks(data: Mapping[str, Any], default_task: str, raw: str | None) -> PromptRecord:
    request = _json_field(data, "request")
    response = _json_field(data, "response") if data.get("response") not in (None, "") else None
    req_meta = data.get("request_metadata") or {}
    if isinstance(req_meta, list):  # a Parquet map column arrives as key/value pairs
        req_meta = {pair[0]: pair[1] for pair in req_meta if isinstance(pair, list | tuple) and len(pair) == 2}
    if not isinstance(req_meta, dict):
        req_meta = {}
    metadata: dict[str, Any] = {
        k: data[k]
        for k in (
            "status_code",
            "client_request_id",
            "served_entity_id",
            "execution_time_ms",
            "execution_duration_ms",
            "sampling_fraction",
            "requester",
        )
        if data.get(k) is not None
    }
    metadata.update({k: v for k, v in req_meta.items() if isinstance(v, str | int | float)})
    task = (
        _first_str(data, "task")
        or _first_str(req_meta, "endpoint_name", "served_entity_name", "model_name")
        or _first_str(data, "served_entity_id")
        or _first_str(request, "model")
    )
    request_id = _first_str(data, "databricks_request_id", "client_request_id")
    when = data.get("timestamp_ms")
    return _record(
        request,
        response,
        request_id=request_id or _content_id(raw, request),
        task=task or default_task,
        timestamp=float(when) / 1000.0 if isinstance(when, int | float) else _timestamp(data.get("request_time")),
        metadata=metadata,
    )


def _from_export(data: Mapping[str, Any]) -> PromptRecord:
    prompt = _prompt(data)
    calls = data.get("response_calls") or []
    if not isinstance(calls, list):
        raise RecordError("bad_tool_call", "response_calls must be a list")
    return PromptRecord(
        request_id=str(data["request_id"]),
        task=str(data["task"]),
        messages=prompt.messages,
        timestamp=_timestamp(data.get("timestamp")),
        response=data.get("response") if isinstance(data.get("response"), str) else None,
        metadata=_mapping(data.get("metadata"), "metadata"),
        tools=prompt.tools,
        tool_choice=prompt.tool_choice,
        response_calls=tuple(tool_shapes.call_from_openai(c) for c in calls),
    )


def _record(
    request: Mapping[str, Any],
    response: Mapping[str, Any] | None,
    *,
    request_id: str,
    task: str,
    timestamp: float,
    metadata: dict[str, Any],
) -> PromptRecord:
    prompt, answer = _prompt(request), _answer(response)
    replay = _replay(response)
    return PromptRecord(
        request_id=request_id,
        task=task,
        messages=prompt.messages,
        timestamp=timestamp,
        response=answer.text,
        metadata={**metadata, "replay": replay} if replay else metadata,
        tools=prompt.tools,
        tool_choice=prompt.tool_choice,
        response_calls=answer.calls,
    )


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecordError(f"bad_{key}", f"{key} must be a JSON object, got {type(value).__name__}")
    return dict(value)


def _json_field(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if isinstance(value, str | bytes):
        value = _loads(value, f"invalid_{key}_json")
    if not isinstance(value, dict):
        raise RecordError(f"bad_{key}", f"{key} must be a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class _Prompt:
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...]
    tool_choice: str | None


def _prompt(request: Mapping[str, Any]) -> _Prompt:
    offered = tool_shapes.tools(request)
    return _Prompt(_messages(request), offered, tool_shapes.tool_choice(request, offered))


def _messages(request: Mapping[str, Any]) -> tuple[Message, ...]:
    if "messages" not in request and "input" in request:
        return _responses_input(request)
    if "system" in request and "messages" in request:
        return _anthropic_messages(request)
    if "messages" not in request and isinstance(request.get("prompt"), str):
        prompt = request["prompt"]
        if not prompt.strip():
            raise RecordError("no_messages", "prompt is empty")
        return (Message("user", prompt),)
    raw = request.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RecordError("no_messages", "request has no non-empty messages list")
    return _conversation(tuple(m for item in raw for m in _message(item)))


def _conversation(messages: tuple[Message, ...]) -> tuple[Message, ...]:
    """A conversation a model can answer: it ends with a turn to answer, has a user message with text, and each
    tool result answers a call made before it."""
    if messages[-1].role == "assistant":
        raise RecordError("bad_message", "conversation ends with an assistant turn: nothing to answer")
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise RecordError("no_messages", "no user message with text")
    called: set[str] = set()
    for message in messages:
        called.update(c.id for c in message.tool_calls)
        if message.role == "tool" and message.tool_call_id not in called:
            raise RecordError(
                "bad_message", f"a tool result for call {str(message.tool_call_id)[:60]!r}, which no turn before made"
            )
    return messages


def _message(raw: Any) -> tuple[Message, ...]:
    """One logged message as taoflow's messages: one, or several where an Anthropic user turn holds tool results."""
    if not isinstance(raw, dict):
        raise RecordError("bad_message", f"message must be an object, got {type(raw).__name__}")
    role = raw.get("role")
    if role == "developer":
        role = "system"
    if role == "function":  # legacy function calling: the result of the one call the turn before made
        return (Message("tool", _content_text(raw.get("content")), tool_call_id=""),)
    if role not in ROLES:
        raise RecordError("bad_message", f"unknown role {role!r}")
    if raw.get("refusal"):  # the text is in `refusal`, not `content`: stored as text, it would read as an answer
        raise UnsupportedRecord("unsupported_content", "a refusal: refusals are not stored as such yet")
    content = raw.get("content")
    if role == "tool":
        if not isinstance(raw.get("tool_call_id"), str):
            raise RecordError("bad_message", "a tool message without its tool_call_id")
        return (Message("tool", _content_text(content), tool_call_id=raw["tool_call_id"]),)
    if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") in _TOOL_BLOCKS for b in content):
        return _anthropic_blocks(role, content)
    calls = raw.get("tool_calls") or ([raw["function_call"]] if raw.get("function_call") else [])
    if calls and role != "assistant":
        raise RecordError("bad_message", f"a {role} turn with tool calls")
    if not isinstance(calls, list):
        raise RecordError("bad_tool_call", "tool_calls must be a list")
    return (Message(role, _content_text(content), tuple(tool_shapes.call_from_openai(c) for c in calls)),)


def _anthropic_blocks(role: str, blocks: list[Any]) -> tuple[Message, ...]:
    """Anthropic content with `tool_use` (an assistant's calls) or `tool_result` blocks (a user turn bringing results
    back: each result is a `tool` message, the turn's text a user message after them)."""
    if role == "assistant":
        calls = tuple(tool_shapes.call_from_anthropic(b) for b in blocks if b.get("type") == "tool_use")
        if any(b.get("type") in _TOOL_BLOCKS - {"tool_use"} for b in blocks):
            raise UnsupportedRecord("unsupported_tools", "a server tool's block: hosted tools' results are not stored")
        return (Message("assistant", _content_text([b for b in blocks if b.get("type") != "tool_use"]), calls),)
    out: list[Message] = []
    text: list[Any] = []
    for block in blocks:
        if block.get("type") != "tool_result":
            text.append(block)
            continue
        if text:
            raise RecordError("bad_message", "text before a tool_result block: results come first in a user turn")
        if block.get("is_error"):
            raise UnsupportedRecord("unsupported_tools", "a tool_result marked is_error: the error flag is not stored")
        if not isinstance(block.get("tool_use_id"), str):
            raise RecordError("bad_message", "a tool_result block without its tool_use_id")
        out.append(Message("tool", _content_text(block.get("content")), tool_call_id=block["tool_use_id"]))
    if text:
        out.append(Message("user", _content_text(text)))
    return tuple(out)


def _anthropic_messages(request: Mapping[str, Any]) -> tuple[Message, ...]:
    """Anthropic Messages: the system prompt beside the messages, content as a string or blocks."""
    system = request.get("system")
    head = () if system in (None, "", []) else (Message("system", _content_text(system)),)
    raw = request.get("messages")
    if not isinstance(raw, list) or not raw:
        raise RecordError("no_messages", "request has no non-empty messages list")
    return _conversation((*head, *(m for item in raw for m in _message(item))))


#: Content blocks of a tool call or its result (Anthropic Messages).
_TOOL_BLOCKS = frozenset({"tool_use", "tool_result", "server_tool_use", "web_search_tool_result"})
#: Responses API input items that are a message: those with a role, typed "message" or untyped.
_RESPONSES_TEXT = frozenset({"input_text", "output_text", "text"})


def _responses_input(request: Mapping[str, Any]) -> tuple[Message, ...]:
    """OpenAI Responses: `instructions` (the system prompt) and `input` (text, or items: messages, function calls and
    their outputs; consecutive calls are one assistant turn's)."""
    if request.get("previous_response_id"):
        raise UnsupportedRecord(
            "unsupported_context",
            "the request continues a stored response (previous_response_id): its earlier turns are not in the log",
        )
    instructions = request.get("instructions")
    head = () if instructions in (None, "") else (Message("system", _content_text(instructions)),)
    items = request.get("input")
    if isinstance(items, str):
        if not items.strip():
            raise RecordError("no_messages", "input is empty")
        return _conversation((*head, Message("user", items)))
    if not isinstance(items, list) or not items:
        raise RecordError("no_messages", "input is neither text nor a non-empty list of items")
    messages: list[Message] = []
    for item in items:
        if not isinstance(item, dict):
            raise RecordError("bad_message", f"input item must be an object, got {type(item).__name__}")
        kind = item.get("type", "message")
        if kind == "function_call":
            call = tool_shapes.call_from_responses(item)
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                messages[-1] = Message("assistant", last.content, (*last.tool_calls, call))
            else:
                messages.append(Message("assistant", "", (call,)))
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise RecordError("bad_message", "a function_call_output item without its call_id")
            messages.append(Message("tool", _content_text(item.get("output")), tool_call_id=item["call_id"]))
        elif isinstance(kind, str) and (kind.endswith("_call") or kind.endswith("_call_output")):
            raise UnsupportedRecord("unsupported_tools", f"a {kind} item: hosted tools' calls are not stored")
        elif kind == "message":
            messages.extend(_message(item))
        else:
            raise RecordError("unsupported_content", f"input item of type {str(kind)[:40]!r}")
    return _conversation((*head, *messages))


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        kinds = [p.get("type") if isinstance(p, dict) else None for p in content]
        parts = [p.get("text") for p, k in zip(content, kinds, strict=True) if k in _RESPONSES_TEXT]
        if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
            shown = sorted({str(k)[:30] for k in kinds if k not in _RESPONSES_TEXT})
            raise RecordError("unsupported_content", f"only text content parts are supported, not {shown}")
        return "\n".join(str(p) for p in parts)
    raise RecordError("bad_message", f"content must be text or a list of parts, got {type(content).__name__}")


@dataclass(frozen=True)
class _Answer:
    text: str | None
    calls: tuple[ToolCall, ...] = ()


def _answer(response: Mapping[str, Any] | None) -> _Answer:
    """The answer production served: its text and the calls it made."""
    if not response:
        return _Answer(None)
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict):
            (turn,) = _message({**message, "role": "assistant"})
            return _Answer(turn.content, turn.tool_calls)
        if isinstance(first.get("text"), str):
            return _Answer(str(first["text"]))
        return _Answer(None)
    if response.get("type") == "message" and isinstance(response.get("content"), list):  # Anthropic Messages
        (turn,) = _message({"role": "assistant", "content": response["content"]})
        return _Answer(turn.content, turn.tool_calls)
    output = response.get("output")
    if isinstance(output, list):  # OpenAI Responses: message items hold the text; reasoning items are not answer
        texts, calls = [], []
        for item in output:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "function_call" and isinstance(item, dict):
                calls.append(tool_shapes.call_from_responses(item))
            elif isinstance(kind, str) and kind.endswith("_call"):
                raise UnsupportedRecord("unsupported_tools", f"the answer holds a {kind}: hosted tools are not stored")
            elif kind == "message" and isinstance(item, dict):
                texts.append(_content_text(item.get("content")))
        return _Answer("\n".join(texts) if texts or calls else None, tuple(calls))
    return _Answer(None)


def _replay(response: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The token ids a replica returned with its answer (vLLM `return_token_ids`: the prompt's, the first choice's)
    and that choice's logprobs, where present: what replays the exchange token for token."""
    if not response or not isinstance(response.get("choices"), list) or not response["choices"]:
        return None
    first = response["choices"][0] if isinstance(response["choices"][0], dict) else {}
    replay: dict[str, Any] = {}
    for key, value in (("prompt_ids", response.get("prompt_token_ids")), ("completion_ids", first.get("token_ids"))):
        if isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            replay[key] = value
    logprobs = first.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if isinstance(content, list):
        values = [t.get("logprob") for t in content if isinstance(t, dict)]
        if all(isinstance(v, int | float) for v in values):
            replay["logprobs"] = values
    return replay or None


def _first_str(data: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _timestamp(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return 0.0
    if isinstance(value, int | float):
        if not math.isfinite(value) or abs(value) > 1e16:
            raise RecordError("bad_timestamp", f"timestamp {str(value)[:40]} is not a time")
        # Milliseconds since the epoch are common in logs; seconds would be before 1973.
        return float(value) / 1000.0 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise RecordError("bad_timestamp", f"cannot read timestamp {value[:40]!r}") from None
    raise RecordError("bad_timestamp", f"timestamp of type {type(value).__name__}")


def _content_id(raw: str | None, request: Mapping[str, Any]) -> str:
    """A stable id for records that carry none, so a replayed record dedups to itself."""
    basis = raw if raw is not None else json.dumps(request, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(basis.encode()).hexdigest()[:32]

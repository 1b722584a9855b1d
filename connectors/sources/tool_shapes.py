"""Tools, tool choices and tool calls as each API logs them, read into `Tool` and `ToolCall`.

OpenAI chat (`tools`, the legacy `functions`; `tool_choice`, the legacy `function_call`; `tool_calls` on assistant
turns), Anthropic Messages (`tools` with `input_schema`; `tool_choice` types; `tool_use` blocks) and OpenAI Responses
(flat function tools; `function_call` items). What cannot be held faithfully is refused with its reason: hosted tools
(web search, code interpreter, computer use: their calls run on the provider's side and their results are not in
the log) and function definitions with fields taoflow does not store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from taoflow.connectors.errors import RecordError, UnsupportedRecord
from taoflow.connectors.records import Tool, ToolCall

__all__ = ["call_from_anthropic", "call_from_openai", "call_from_responses", "tool_choice", "tools"]

#: Keys of a function definition that a `Tool` holds (Anthropic's `cache_control` is a caching hint, not content).
_FUNCTION_KEYS = frozenset({"name", "description", "parameters", "input_schema", "strict", "type", "cache_control"})
MODES = frozenset({"auto", "none", "required"})


def tools(request: Mapping[str, Any]) -> tuple[Tool, ...]:
    """The function tools a request offers, from whichever API's shape it has."""
    listed = request.get("tools")
    legacy = request.get("functions")
    if listed in (None, []) and legacy in (None, []):
        return ()
    if listed not in (None, []) and legacy not in (None, []):
        raise RecordError("bad_tools", "the request has both tools and functions")
    raw = listed if listed not in (None, []) else [{"type": "function", "function": f} for f in legacy or ()]
    if not isinstance(raw, list):
        raise RecordError("bad_tools", f"tools must be a list, got {type(raw).__name__}")
    out = tuple(_tool(item) for item in raw)
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise RecordError("bad_tools", "two tools share a name")
    return out


def _tool(item: Any) -> Tool:
    if not isinstance(item, dict):
        raise RecordError("bad_tools", f"a tool must be an object, got {type(item).__name__}")
    kind = item.get("type", "custom" if "input_schema" in item else "function")
    if kind == "function" and isinstance(item.get("function"), dict):
        spec = item["function"]  # OpenAI chat
    elif kind in ("function", "custom") and "name" in item:
        spec = item  # OpenAI Responses (flat) or Anthropic
    else:
        raise UnsupportedRecord(
            "unsupported_tools",
            f"a tool of type {str(kind)[:40]!r}: hosted tools run on the provider's side and their results are not "
            "in the log; only function tools are stored",
        )
    extra = sorted(set(spec) - _FUNCTION_KEYS - ({"function"} if spec is item else set()))
    if extra or (kind == "custom" and "input_schema" not in item):
        raise UnsupportedRecord(
            "unsupported_tools", f"tool {str(spec.get('name'))[:60]!r} has fields taoflow does not store: {extra[:5]}"
        )
    name, description = spec.get("name"), spec.get("description", "")
    parameters = spec.get("parameters", spec.get("input_schema", {}))
    strict = spec.get("strict")
    if not isinstance(name, str) or not name.strip():
        raise RecordError("bad_tools", "a tool has no name")
    if not isinstance(description, str | None) or not isinstance(parameters, dict | None):
        raise RecordError("bad_tools", f"tool {name[:60]!r}: description must be text, parameters an object")
    if not isinstance(strict, bool | None):
        raise RecordError("bad_tools", f"tool {name[:60]!r}: strict must be true or false")
    return Tool(name, description or "", parameters or {}, strict)


def tool_choice(request: Mapping[str, Any], offered: tuple[Tool, ...]) -> str | None:
    """`auto`, `none`, `required` or the name of the one tool the request forces; None where the request says
    nothing. Anthropic's `any` is `required`; its `tool` type and OpenAI's function object name a tool."""
    raw = request.get("tool_choice", request.get("function_call") if "functions" in request else None)
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw not in MODES:
            raise RecordError("bad_tool_choice", f"tool_choice {raw[:40]!r} is none of {sorted(MODES)}")
        return raw
    if not isinstance(raw, dict):
        raise RecordError("bad_tool_choice", f"tool_choice must be text or an object, got {type(raw).__name__}")
    kind = raw.get("type")
    if kind in ("auto", "none"):
        return str(kind)
    if kind == "any":
        return "required"
    function = raw.get("function")
    name = function.get("name") if isinstance(function, dict) else raw.get("name")
    if kind not in (None, "function", "tool") or not isinstance(name, str):
        raise UnsupportedRecord("unsupported_tools", f"a tool_choice of type {str(kind)[:40]!r}")
    if name in MODES or name not in {t.name for t in offered}:
        raise RecordError("bad_tool_choice", f"tool_choice names {name[:60]!r}, which is not a tool of the request")
    return name


def _arguments(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):  # some logs keep the arguments decoded; the text they came from was JSON
        return json.dumps(value, ensure_ascii=False)
    raise RecordError("bad_tool_call", f"{where}: arguments must be JSON text or an object")


def call_from_openai(raw: Any) -> ToolCall:
    """One entry of an OpenAI chat `tool_calls` list, or a legacy `function_call` object."""
    if not isinstance(raw, dict):
        raise RecordError("bad_tool_call", f"a tool call must be an object, got {type(raw).__name__}")
    if raw.get("type", "function") != "function":
        raise UnsupportedRecord("unsupported_tools", f"a tool call of type {str(raw.get('type'))[:40]!r}")
    function = raw.get("function", raw)
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise RecordError("bad_tool_call", "a tool call without a function name")
    call_id = raw.get("id") if "function" in raw else ""
    return ToolCall(str(call_id or ""), function["name"], _arguments(function.get("arguments", ""), "a tool call"))


def call_from_anthropic(block: Mapping[str, Any]) -> ToolCall:
    """A `tool_use` content block: its `input` is an object, written as the JSON text a call's arguments are (a
    captured stream whose input did not parse keeps the text as streamed, `input_json`)."""
    if not isinstance(block.get("name"), str) or not isinstance(block.get("input", {}), dict):
        raise RecordError("bad_tool_call", "a tool_use block needs a name and an input object")
    if isinstance(block.get("input_json"), str):
        return ToolCall(str(block.get("id") or ""), block["name"], block["input_json"])
    return ToolCall(str(block.get("id") or ""), block["name"], json.dumps(block.get("input", {}), ensure_ascii=False))


def call_from_responses(item: Mapping[str, Any]) -> ToolCall:
    """A Responses `function_call` item (`call_id` is the id its `function_call_output` answers)."""
    if not isinstance(item.get("name"), str):
        raise RecordError("bad_tool_call", "a function_call item without a name")
    return ToolCall(str(item.get("call_id") or ""), item["name"], _arguments(item.get("arguments", ""), "a call"))

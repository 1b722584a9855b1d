"""Tool calls in a model's own words, read back from an answer's text.

A model family writes calls its own way; `model.tool_call_parser` names it:

* `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call (Qwen, Hermes, and the
  built-in template `chatml-tools` that taoflow ships for SmolLM2);
* `llama3_json`: the answer is one JSON object `{"name": ..., "parameters": {...}}` (Llama 3.1+), or several
  separated by `;`.

An answer is either text or calls (text around hermes blocks is kept as the answer's content). Parsing is bounded:
an answer is at most a few thousand tokens, and at most `MAX_CALLS` calls are read from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import ToolCall, canonical_json

__all__ = [
    "MAX_CALLS",
    "PARSERS",
    "ParsedAnswer",
    "ToolCallParser",
    "call_signature",
    "parse_answer",
    "tool_call_parser",
]

ToolCallParser = Literal["none", "hermes", "llama3_json"]
PARSERS: tuple[ToolCallParser, ...] = ("hermes", "llama3_json")
MAX_CALLS = 16
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer read back: its text, the calls it makes, and what was wrong with a call it tried to make (an
    unclosed block, arguments that are not JSON); `malformed` empty where nothing was."""

    content: str
    calls: tuple[ToolCall, ...] = ()
    malformed: str = ""

    @property
    def is_call(self) -> bool:
        return bool(self.calls) or bool(self.malformed)


def parse_answer(text: str, parser: ToolCallParser) -> ParsedAnswer:
    """An answer as text and calls, in the convention of `parser` (`none`: all text)."""
    if parser == "hermes":
        return _hermes(text)
    if parser == "llama3_json":
        return _llama3(text)
    return ParsedAnswer(text)


def _hermes(text: str) -> ParsedAnswer:
    blocks = _HERMES.findall(text)
    content = _HERMES.sub("", text).strip()
    if "<tool_call>" in content:
        return ParsedAnswer(content, malformed="a <tool_call> block is not closed")
    calls: list[ToolCall] = []
    for index, block in enumerate(blocks[:MAX_CALLS]):
        call = _call(block, index, arguments_key="arguments")
        if isinstance(call, str):
            return ParsedAnswer(content, tuple(calls), malformed=call)
        calls.append(call)
    return ParsedAnswer(content, tuple(calls))


def _llama3(text: str) -> ParsedAnswer:
    stripped = text.strip().removeprefix("<|python_tag|>").strip()
    if not stripped.startswith("{"):
        return ParsedAnswer(text)
    calls: list[ToolCall] = []
    for index, part in enumerate(stripped.split(";")[:MAX_CALLS]):
        call = _call(part, index, arguments_key="parameters")
        if isinstance(call, str):
            return ParsedAnswer("", tuple(calls), malformed=call)
        calls.append(call)
    return ParsedAnswer("", tuple(calls))


def _call(text: str, index: int, *, arguments_key: str) -> ToolCall | str:
    """One call's JSON as a ToolCall (its id made up, as vLLM's parsers do), or what is wrong with it."""
    try:
        data = json.loads(text)
    except ValueError:
        return "a call that is not JSON"
    except RecursionError:
        return "a call nested too deep"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return "a call without a function name"
    arguments = data.get(arguments_key, data.get("arguments", {}))
    if not isinstance(arguments, dict):
        return f"call {data['name'][:60]!r}: its arguments are not an object"
    return ToolCall(f"call_{index}", data["name"], json.dumps(arguments, ensure_ascii=False))


def tool_call_parser(name: str) -> ToolCallParser:
    """`name` as a parser that reads calls, or a ConfigurationError."""
    for parser in PARSERS:
        if parser == name:
            return parser
    raise ConfigurationError(f"tool call parser {name!r} is none of {list(PARSERS)} (model.tool_call_parser)")


def call_signature(answer: str, parser: str) -> str | None:
    """What two answers must share to agree as calls (self-consistency over calls): each call's name and
    arguments, canonical (key order and spacing aside); None for a text answer or a malformed call."""
    parsed = parse_answer(answer, tool_call_parser(parser))
    if not parsed.calls or parsed.malformed:
        return None
    return canonical_json([[c.name, c.parsed_arguments()] for c in parsed.calls])

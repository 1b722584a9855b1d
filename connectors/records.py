"""The prompt record: what an inference log line holds, in one shape for every source.

Agent traffic is held whole: the tools a request offers (`Tool`), the calls an assistant turn makes (`ToolCall`),
the results that `tool` turns bring back (`Message.tool_call_id`), and an answer that is a call
(`PromptRecord.response_calls`). `Message.as_dict` and `PromptRecord.chat` give them in the OpenAI chat shape, which
chat templates (`apply_chat_template(tools=...)`) and vLLM's chat read.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "Chat",
    "Message",
    "PromptRecord",
    "Role",
    "Tool",
    "ToolCall",
    "as_chat",
    "canonical_json",
    "folded_text",
    "normalised_prompt_hash",
]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})


def canonical_json(value: Any) -> str:
    """One text for one JSON value (sorted keys, no spaces): what hashes and comparisons of tools and calls read."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Tool:
    """A function the request offers the model: its name, description and JSON-schema `parameters`.

    `strict` is OpenAI's flag for schema-constrained arguments; it is kept so the record says what the request said.
    """

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    strict: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "description": self.description, "parameters": self.parameters}
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    """A call an assistant turn makes: its id (empty where the API had none), the tool's name, and the arguments as
    the JSON text the model wrote (kept as written: a call whose arguments do not parse is a fact about the answer)."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> Any:
        """The arguments as JSON, or None where they do not parse (nested past the parser's depth included: they
        come from a log or a model's answer)."""
        try:
            return json.loads(self.arguments)
        except (ValueError, RecursionError):
            return None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def as_template_dict(self) -> dict[str, Any]:
        """As chat templates read a call: arguments as an object where they parse (templates write them with
        `tojson`), else the text."""
        parsed = self.parsed_arguments()
        arguments = parsed if isinstance(parsed, dict) else self.arguments
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": arguments}}


@dataclass(frozen=True)
class Message:
    """One chat message: text content (multi-part text is joined by the parser), the calls an assistant turn makes,
    and for a `tool` turn the id of the call whose result it is."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.as_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out

    def as_template_dict(self) -> dict[str, Any]:
        out = self.as_dict()
        if self.tool_calls:
            out["tool_calls"] = [c.as_template_dict() for c in self.tool_calls]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Message:
        """Read `as_dict`'s shape back."""
        calls = tuple(
            ToolCall(str(c.get("id") or ""), c["function"]["name"], c["function"]["arguments"])
            for c in data.get("tool_calls") or ()
        )
        return cls(data["role"], data.get("content") or "", calls, data.get("tool_call_id"))


@dataclass(frozen=True)
class Chat:
    """What a model is asked: the conversation and the tools it may call, in the shape chat templates read."""

    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()

    def template_messages(self) -> list[dict[str, Any]]:
        return [m.as_template_dict() for m in self.messages]

    def template_tools(self) -> list[dict[str, Any]] | None:
        return [t.as_dict() for t in self.tools] or None


def as_chat(conversation: Chat | Sequence[Message]) -> Chat:
    """A conversation as a `Chat` (a plain message sequence offers no tools)."""
    return conversation if isinstance(conversation, Chat) else Chat(tuple(conversation))


@dataclass(frozen=True)
class PromptRecord:
    """One logged request: the prompt to improve on, and what was logged around it.

    `messages` ends with the turn the model should answer (a user message, or a tool's result); `tools` are the
    functions the request offered and `tool_choice` what it asked of them (`auto`, `none`, `required`, or a tool's
    name); `response` is the text of the answer that production gave, when the log has it, and `response_calls` the
    calls that answer made.
    """

    request_id: str
    task: str
    messages: tuple[Message, ...]
    timestamp: float = 0.0
    response: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[Tool, ...] = ()
    tool_choice: str | None = None
    response_calls: tuple[ToolCall, ...] = ()

    @property
    def prompt_hash(self) -> str:
        return normalised_prompt_hash(self.messages, self.tools, self.tool_choice)

    @property
    def chat(self) -> Chat:
        return Chat(self.messages, self.tools)

    @property
    def uses_tools(self) -> bool:
        """Whether the request offers tools, or its conversation holds calls or their results."""
        return bool(self.tools) or any(m.tool_calls or m.role == "tool" for m in self.messages)

    def tool_choice_dict(self) -> str | dict[str, Any] | None:
        """`tool_choice` in the OpenAI chat shape: a mode, or the object that names the one tool to call."""
        if self.tool_choice in (None, "auto", "none", "required"):
            return self.tool_choice
        return {"type": "function", "function": {"name": self.tool_choice}}

    @property
    def prompt_chars(self) -> int:
        """The prompt's size in characters: its turns' text, the calls' arguments and the tools' definitions."""
        turns = sum(len(m.content) + sum(len(c.arguments) + len(c.name) for c in m.tool_calls) for m in self.messages)
        return turns + sum(len(canonical_json(t.as_dict())) for t in self.tools)

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "request_id": self.request_id,
            "task": self.task,
            "messages": [m.as_dict() for m in self.messages],
            "timestamp": self.timestamp,
            "response": self.response,
            "metadata": dict(self.metadata),
        }
        if self.tools:
            data["tools"] = [t.as_dict() for t in self.tools]
        if self.tool_choice is not None:
            data["tool_choice"] = self.tool_choice_dict()
        if self.response_calls:
            data["response_calls"] = [c.as_dict() for c in self.response_calls]
        try:
            return orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
        except orjson.JSONEncodeError:  # metadata orjson cannot write (integers past 64 bits)
            return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PromptRecord:
        data = json.loads(text)
        return cls(
            request_id=data["request_id"],
            task=data["task"],
            messages=tuple(Message.from_dict(m) for m in data["messages"]),
            timestamp=float(data.get("timestamp") or 0.0),
            response=data.get("response"),
            metadata=data.get("metadata") or {},
            tools=tuple(
                Tool(f["name"], f.get("description") or "", f.get("parameters") or {}, f.get("strict"))
                for f in (t["function"] for t in data.get("tools") or ())
            ),
            tool_choice=_choice(data.get("tool_choice")),
            response_calls=Message.from_dict(
                {"role": "assistant", "tool_calls": data.get("response_calls")}
            ).tool_calls,
        )


def _choice(value: Any) -> str | None:
    if isinstance(value, dict):
        return str(value["function"]["name"])
    return None if value is None else str(value)


def normalised_prompt_hash(
    messages: Sequence[Message], tools: Sequence[Tool] = (), tool_choice: str | None = None
) -> str:
    """Hash of the whole context, with case, Unicode form and white space of text folded.

    Two requests that differ only in spacing or capitalisation are the same prompt for
    training purposes, so the buffer keeps one of them. Tools, calls, call ids and `tool_choice` are part of the
    context (the same question with other tools is another prompt); a record without them hashes as it always did.
    """
    digest = hashlib.sha256()
    for message in messages:
        digest.update(message.role.encode() + b"\x1f" + folded_text(message.content) + b"\x1e")
        if message.tool_calls or message.tool_call_id is not None:
            calls = [[c.id, c.name, _arguments_key(c)] for c in message.tool_calls]
            digest.update(b"\x1d" + canonical_json([calls, message.tool_call_id]).encode() + b"\x1e")
    if tools or tool_choice is not None:
        digest.update(b"\x1c" + canonical_json([[t.as_dict() for t in tools], tool_choice]).encode())
    return digest.hexdigest()


def _arguments_key(call: ToolCall) -> str:
    parsed = call.parsed_arguments()
    return call.arguments if parsed is None else canonical_json(parsed)


# The characters str.split() splits ASCII text on, besides the space.
_ASCII_SPACE = bytes.maketrans(b"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f", b" " * 9)


def folded_text(text: str) -> bytes:
    """`" ".join(NFKC(text).casefold().split())` as UTF-8: what the prompt hash digests.

    ASCII text (most prompts) takes a path with the same result at about half the cost
    (bench/buffer.py): NFKC leaves ASCII alone, casefold is lower, and split/join becomes
    byte translation.
    """
    if text.isascii():
        data = text.lower().encode().translate(_ASCII_SPACE)
        while b"  " in data:
            data = data.replace(b"  ", b" ")
        return data.strip(b" ")
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split()).encode()

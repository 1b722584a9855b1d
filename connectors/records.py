"""The prompt record: what an inference log line holds, in one shape for every source."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = ["Message", "PromptRecord", "Role", "folded_text", "normalised_prompt_hash"]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})


@dataclass(frozen=True)
class Message:
    """One chat message; content is plain text (multi-part content is joined by the parser)."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class PromptRecord:
    """One logged request: the prompt to improve on, and what was logged around it.

    `messages` ends with the turn the model should answer (normally a user message);
    `response` is the answer that production gave, when the log has it.
    """

    request_id: str
    task: str
    messages: tuple[Message, ...]
    timestamp: float = 0.0
    response: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def prompt_hash(self) -> str:
        return normalised_prompt_hash(self.messages)

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""

    def to_json(self) -> str:
        data = {
            "request_id": self.request_id,
            "task": self.task,
            "messages": [m.as_dict() for m in self.messages],
            "timestamp": self.timestamp,
            "response": self.response,
            "metadata": dict(self.metadata),
        }
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
            messages=tuple(Message(m["role"], m["content"]) for m in data["messages"]),
            timestamp=float(data.get("timestamp") or 0.0),
            response=data.get("response"),
            metadata=data.get("metadata") or {},
        )


def normalised_prompt_hash(messages: Sequence[Message]) -> str:
    """Hash of the conversation with case, Unicode form and white space folded.

    Two requests that differ only in spacing or capitalisation are the same prompt for
    training purposes, so the buffer keeps one of them.
    """
    digest = hashlib.sha256()
    for message in messages:
        digest.update(message.role.encode() + b"\x1f" + folded_text(message.content) + b"\x1e")
    return digest.hexdigest()


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

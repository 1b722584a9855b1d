"""Which kind of answer a round may train a prompt toward: a tool call, text, or either.

A purely computational function of a prompt's facts. Without labels, the evidence is what the request asked
(`tool_choice`), what production answered, and where the conversation stands. Where nothing says text is right, a
prompt that offers tools trains only toward calls: a round that taught text answers to prompts whose right answer
is a call would teach the agent it serves to stop calling its tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["AnswerKind", "ExpectedAnswer", "expected_answer"]

AnswerKind = Literal["call", "text", "either"]


@dataclass(frozen=True)
class ExpectedAnswer:
    kind: AnswerKind
    reason: str

    def allows(self, *, is_call: bool) -> bool:
        return self.kind == "either" or (self.kind == "call") == is_call


def expected_answer(
    *, offers_tools: bool, tool_choice: str | None, last_role: str, served_call: bool, served_text: bool
) -> ExpectedAnswer:
    """`served_call`/`served_text`: production's logged answer was a call / non-empty text without one."""
    if not offers_tools:
        return ExpectedAnswer("text", "the request offers no tools")
    if tool_choice == "none":
        return ExpectedAnswer("text", "tool_choice is none")
    if tool_choice not in (None, "auto"):
        return ExpectedAnswer("call", f"tool_choice is {tool_choice}")
    if served_call:
        return ExpectedAnswer("call", "production answered with a call")
    if served_text:
        return ExpectedAnswer("either", "production answered in text")
    if last_role == "tool":
        return ExpectedAnswer("either", "the turn answers a tool's result")
    return ExpectedAnswer("call", "tools are offered and nothing says text is right")

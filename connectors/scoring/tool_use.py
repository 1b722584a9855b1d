"""Scoring tool calls without labels: whether a call is one the request allows, with arguments its tool accepts.

`ToolCallScorer` (`tool_call`) reads each candidate's calls with the model's parser and checks them against the
request's own tools: the name is a tool of the request (the one `tool_choice` names, where it names one), the
arguments are a JSON object valid against that tool's `parameters` schema (required ones present), and
`tool_choice` is honoured (`none`: no call; `required` or a name: a call). A text answer where a call is required
scores 0; where a call is optional, the scorer cannot judge text (None) and the task's other scorers do.

A tool's schema comes from the log, so it is input from outside: it is checked before use, a `$ref` resolves
inside it only (nothing is fetched), and scoring runs in the verifiers' sandbox (time and memory bounded), as every
verifier does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import PromptRecord, Tool, ToolCall
from taoflow.connectors.scoring.verifiers import no_retrieval
from taoflow.connectors.tool_calls import ParsedAnswer, parse_answer, tool_call_parser

__all__ = ["ToolCallScorer"]


class ToolCallScorer:
    """1.0 for an answer whose calls are all valid for the request; `partial` where every call names a tool of the
    request but some arguments do not fit its schema; 0.0 for a malformed call, an unknown tool, or an answer that
    breaks `tool_choice`. None where it cannot judge: a request without tools, or text where a call is optional.

    params: `parser` (how the model writes calls, as `model.tool_call_parser`: hermes, llama3_json), `partial`.
    """

    name = "tool_call"

    def __init__(self, *, parser: str = "hermes", partial: float = 0.0) -> None:
        self.parser = tool_call_parser(parser)
        if not 0.0 <= partial <= 1.0:
            raise ConfigurationError("tool_call scorer: partial must be in [0, 1]")
        self.partial = partial

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        if not record.tools:
            return [None] * len(responses)
        validators = {t.name: _validator(t) for t in record.tools}
        return [self._one(record, parse_answer(r, self.parser), validators) for r in responses]

    def _one(self, record: PromptRecord, answer: ParsedAnswer, validators: Mapping[str, Any]) -> float | None:
        choice = record.tool_choice
        if not answer.is_call:
            return 0.0 if choice not in (None, "auto", "none") else None
        if answer.malformed or choice == "none":
            return 0.0
        if choice not in (None, "auto", "required") and any(c.name != choice for c in answer.calls):
            return 0.0
        if any(c.name not in validators for c in answer.calls):
            return 0.0
        fits = all(_fits(validators[c.name], c) for c in answer.calls)
        return 1.0 if fits else self.partial


def _validator(tool: Tool) -> Any:
    """A validator of the tool's arguments, or None where its schema is not one (no check is then possible, and
    arguments pass if they are an object)."""
    schema = dict(tool.parameters) or {"type": "object"}
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except (jsonschema.SchemaError, RecursionError):
        return None
    registry = referencing.Registry(retrieve=no_retrieval)  # type: ignore[call-arg]  # attrs-made __init__
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _fits(validator: Any, call: ToolCall) -> bool:
    arguments = call.parsed_arguments()
    if not isinstance(arguments, dict):
        return False
    if validator is None:
        return True
    try:
        return bool(validator.is_valid(arguments))
    except (referencing.exceptions.Unresolvable, RecursionError):
        return False

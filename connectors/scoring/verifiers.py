"""Label-free verifiers: each rates candidate answers to one prompt with a float in [0, 1].

A verifier returns None for a candidate it cannot judge (no expression in the prompt,
no schema for the task); the composite scorer leaves it out of that candidate's mean.
Raising, or returning anything but a number in [0, 1] or None, is a failure that the
composite counts and that leaves the candidate unscored.
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import operator
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.tool_calls import call_signature

__all__ = [
    "ArithmeticScorer",
    "JsonSchemaScorer",
    "LengthScorer",
    "PythonScorer",
    "RegexScorer",
    "SelfConsistencyScorer",
    "SqlScorer",
    "extract_json",
    "last_number",
    "no_retrieval",
    "values_in_prompt",
]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_FENCE = re.compile(r"```(?:[A-Za-z]+)?\s*\n?(.*?)```", re.DOTALL)


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def extract_json(text: str) -> Any:
    """The JSON value of an answer: the whole text, or the inside of its first code fence."""
    fenced = _FENCE.search(text)
    candidate = fenced.group(1) if fenced else text
    return json.loads(candidate.strip())


# ---------------------------------------------------------------------------- arithmetic
_WORDS = [
    (re.compile(r"\bmultiplied by\b|\btimes\b|\u00d7", re.I), "*"),
    (re.compile(r"\bdivided by\b|\u00f7", re.I), "/"),
    (re.compile(r"\bplus\b", re.I), "+"),
    (re.compile(r"\bminus\b", re.I), "-"),
]
_EXPRESSION = re.compile(r"[\d\s.+\-*/()]*\d[\d\s.+\-*/()]*")
_OPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right)))
    raise ValueError(f"unsupported expression element {type(node).__name__}")


def expression_in(text: str) -> str | None:
    """The longest arithmetic expression (with at least one operator) in `text`."""
    for pattern, symbol in _WORDS:
        text = pattern.sub(symbol, text)
    found = [m.strip() for m in _EXPRESSION.findall(text) if re.search(r"\d\s*[+\-*/]\s*[\d(]", m)]
    return max(found, key=len) if found else None


class ArithmeticScorer:
    """1.0 when the answer's final number equals the value of the expression in the prompt.

    params: `strict` (the answer must be only the number), `tolerance` (relative).
    The expression comes from `metadata.expression` when the log carries one.
    """

    name = "arithmetic"

    def __init__(self, *, strict: bool = False, tolerance: float = 1e-6) -> None:
        self.strict = strict
        self.tolerance = tolerance

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        expression = record.metadata.get("expression") or expression_in(record.last_user_text)
        if not expression:
            return [None] * len(responses)
        expected = _evaluate(ast.parse(str(expression), mode="eval"))
        return [self._one(expected, r) for r in responses]

    def _one(self, expected: float, response: str) -> float:
        if self.strict and not re.fullmatch(r"\s*-?\d+(?:\.\d+)?\s*\.?\s*", response.replace(",", "")):
            return 0.0
        got = last_number(response)
        if got is None:
            return 0.0
        return 1.0 if math.isclose(got, expected, rel_tol=self.tolerance, abs_tol=self.tolerance) else 0.0


# ---------------------------------------------------------------------------- formats
class JsonSchemaScorer:
    """1.0 for an answer that is JSON and valid against the schema; `partial` if JSON only.

    params: `schema` (inline, from the configuration only: a schema in a log record is input from outside),
    `allow_fence` (accept a ```json fenced block, default true). A `$ref` resolves inside the schema only: nothing
    is ever fetched from the network or the disk.
    """

    name = "json_schema"

    def __init__(self, *, schema: Mapping[str, Any] | None = None, partial: float = 0.0, allow_fence: bool = True):
        if schema is None:
            raise ConfigurationError("the json_schema scorer needs params.schema (schemas are never read from logs)")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ConfigurationError(f"json_schema scorer: invalid schema: {exc.message}") from None
        registry = referencing.Registry(retrieve=no_retrieval)  # type: ignore[call-arg]  # attrs-made __init__
        self.validator = jsonschema.Draft202012Validator(schema, registry=registry)
        self.partial = partial
        self.allow_fence = allow_fence

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        return [self._one(self.validator, r) for r in responses]

    def _one(self, validator: jsonschema.Draft202012Validator, response: str) -> float:
        try:
            value = extract_json(response) if self.allow_fence else json.loads(response)
        except (json.JSONDecodeError, ValueError):
            return 0.0
        return 1.0 if validator.is_valid(value) else self.partial


class RegexScorer:
    """1.0 when the answer matches `pattern` (`mode`: search or fullmatch); `negate` inverts."""

    name = "regex"

    def __init__(self, *, pattern: str, mode: str = "search", negate: bool = False, flags: str = "") -> None:
        if mode not in ("search", "fullmatch"):
            raise ConfigurationError(f"regex scorer mode must be search or fullmatch, not {mode!r}")
        compiled_flags = (re.I if "i" in flags else 0) | (re.S if "s" in flags else 0) | (re.M if "m" in flags else 0)
        self.pattern = re.compile(pattern, compiled_flags)
        self.match = self.pattern.fullmatch if mode == "fullmatch" else self.pattern.search
        self.negate = negate

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        return [float(bool(self.match(r.strip())) != self.negate) for r in responses]


class LengthScorer:
    """1.0 up to `max_chars`, falling linearly to 0.0 at twice that: rewards concise answers."""

    name = "length"

    def __init__(self, *, max_chars: int = 200) -> None:
        self.max_chars = max_chars

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        return [max(0.0, min(1.0, 2.0 - len(r) / self.max_chars)) for r in responses]


# ---------------------------------------------------------------------------- SQL
class SqlScorer:
    """SQL answers that parse and run against a given SQLite schema.

    1.0 when the statement runs read-only, reads a table the question names (or, when the question names none
    of the schema's tables, any of them) and returns at least one row; `empty_score` when it runs but returns
    none; 0.0 when it does not parse, fails, or reads no such table (`SELECT 1` answers no question, and
    `SELECT * FROM users` does not answer "How many orders were placed in March?"). A table is named by its name
    or its singular or plural as a word of the prompt's last user message. What this cannot check: that the
    answer computes what was asked (a count, a filter, a month) — it is a verifier of shape, not a grader.
    params: `schema` (DDL and seed INSERTs, run once per answer in a fresh in-memory database), `max_steps` (VM
    step budget), `require_table` (default true).

    An answer may only read: attaching databases (so `ATTACH` and `VACUUM INTO`, which write files) is
    impossible, every action but reading is refused by an authorizer, and strings and blobs are capped at
    1 MB (`randomblob(4e8)` fails instead of allocating).
    """

    name = "sql"

    def __init__(
        self, *, schema: str, empty_score: float = 0.5, max_steps: int = 200_000, require_table: bool = True
    ) -> None:
        self.schema = schema
        self.empty_score = empty_score
        self.max_steps = max_steps
        self.require_table = require_table
        try:
            conn = self._database()
            self.tables = {str(r[0]).lower() for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            conn.close()
        except sqlite3.Error as exc:
            raise ConfigurationError(f"sql scorer schema does not run: {exc}") from None

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        relevant = self.named_tables(record) or self.tables
        return [self._one(r, relevant) for r in responses]

    def named_tables(self, record: PromptRecord) -> set[str]:
        """The schema's tables that the question names (by name, singular or plural)."""
        asked = next((m.content for m in reversed(record.messages) if m.role == "user"), "")
        words = set(re.findall(r"[a-z_][a-z0-9_]*", asked.lower()[:20_000]))
        return {t for t in self.tables if {t, t.removesuffix("s"), t + "s"} & words}

    def _database(self) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:")
        conn.executescript(self.schema)
        conn.execute("PRAGMA query_only=ON")  # an answer can read, never change or drop
        for limit, value in _SQL_LIMITS.items():
            conn.setlimit(limit, value)
        return conn

    def _one(self, response: str, relevant: set[str]) -> float:
        fenced = _FENCE.search(response)
        sql = (fenced.group(1) if fenced else response).strip().rstrip(";")
        if not sql or not sqlite3.complete_statement(sql + ";"):
            return 0.0
        conn = self._database()
        steps = 0
        read: set[str] = set()

        def budget() -> int:
            nonlocal steps
            steps += 1
            return 1 if steps > self.max_steps // 1000 else 0

        def authorize(action: int, first: str | None, second: str | None, db: str | None, trigger: str | None) -> int:
            if action == sqlite3.SQLITE_READ and first is not None:
                read.add(first.lower())
            return sqlite3.SQLITE_OK if action in _SQL_READING else sqlite3.SQLITE_DENY

        conn.set_progress_handler(budget, 1000)
        conn.set_authorizer(authorize)
        try:
            rows = conn.execute(sql).fetchmany(1)
        except (sqlite3.Error, sqlite3.Warning, ValueError, MemoryError):
            return 0.0
        finally:
            conn.close()
        if self.require_table and not read & relevant:
            return 0.0
        return 1.0 if rows else self.empty_score


#: What an answer's SQL may do: read (selects, functions, recursive queries), nothing else.
_SQL_READING = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
#: Caps on what one answer's SQL may build: no attached databases (ATTACH, VACUUM INTO), 1 MB strings and blobs.
_SQL_LIMITS = {
    sqlite3.SQLITE_LIMIT_ATTACHED: 0,
    sqlite3.SQLITE_LIMIT_LENGTH: 1_000_000,
    sqlite3.SQLITE_LIMIT_SQL_LENGTH: 100_000,
    sqlite3.SQLITE_LIMIT_EXPR_DEPTH: 200,
    sqlite3.SQLITE_LIMIT_COMPOUND_SELECT: 64,
}


def no_retrieval(uri: str) -> Any:
    """A schema registry's retrieval: never fetched, not from the network, not from the disk."""
    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs-made __init__


# ---------------------------------------------------------------------------- python
#: Modules of taoflow's own ready-made verifiers that moved; configurations that name the old path keep working.
MOVED_MODULES = {"taoflow.connectors.verifiers": "taoflow.connectors.scoring.verifiers"}


def load_callable(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"python scorer callable must look like 'package.module:function', not {path!r}")
    module_name = MOVED_MODULES.get(module_name, module_name)
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import python scorer {path!r}: {exc}") from None
    if not callable(target):
        raise ConfigurationError(f"python scorer {path!r} is not callable")
    return target  # type: ignore[no-any-return]


class PythonScorer:
    """Calls `callable(record, response, **kwargs)` per candidate; bool or float in [0, 1]."""

    def __init__(self, *, callable: str, kwargs: Mapping[str, Any] | None = None) -> None:
        self.function = load_callable(callable)
        self.kwargs = dict(kwargs or {})
        self.name = f"python:{callable}"

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        results: list[float | None] = []
        for response in responses:
            value = self.function(record, response, **self.kwargs)
            results.append(float(value) if isinstance(value, bool) else value)
        return results


def values_in_prompt(record: PromptRecord, response: str) -> float:
    """A ready-made Python verifier: share of a JSON answer's scalar values found in the prompt.

    Catches extraction answers that invent values; 0.0 when the answer is not JSON.
    """
    try:
        value = extract_json(response)
    except (json.JSONDecodeError, ValueError):
        return 0.0
    leaves: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)
        elif node is not None and not isinstance(node, bool):
            leaves.append(str(node).casefold())

    walk(value)
    if not leaves:
        return 0.0
    prompt = record.last_user_text.casefold()
    return sum(leaf in prompt for leaf in leaves) / len(leaves)


# ---------------------------------------------------------------------------- consistency
class SelfConsistencyScorer:
    """Agreement with the majority: votes for this answer / votes for the most common answer.

    params: `extract`: `last_number`, `json` (canonical JSON), `text` (folded white space) or `tool_call` (the
    calls' names and arguments, read with `parser`: hermes or llama3_json; a text answer has no vote).
    """

    name = "self_consistency"

    def __init__(self, *, extract: str = "text", parser: str = "hermes") -> None:
        extractors: dict[str, Callable[[str], object]] = {
            "last_number": last_number,
            "json": lambda r: json.dumps(extract_json(r), sort_keys=True),
            "text": lambda r: " ".join(r.casefold().split()) or None,
            "tool_call": lambda r: call_signature(r, parser),
        }
        if extract == "tool_call":
            call_signature("", parser)  # an unknown parser fails here, at start-up
        if extract not in extractors:
            raise ConfigurationError(f"self_consistency extract must be one of {sorted(extractors)}")
        self._extract = extractors[extract]

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        answers = [self._safe(r) for r in responses]
        votes = Counter(a for a in answers if a is not None)
        if len(responses) < 2 or not votes:
            return [None] * len(responses)
        top = max(votes.values())
        return [votes[a] / top if a is not None else 0.0 for a in answers]

    def _safe(self, response: str) -> object | None:
        try:
            return self._extract(response)
        except (json.JSONDecodeError, ValueError):
            return None

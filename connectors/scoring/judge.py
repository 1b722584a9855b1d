"""An LLM judge over any OpenAI-compatible endpoint: a rubric in, a score per candidate out, never a guess.

Two modes. *Pointwise* asks once per candidate for a verdict `{"score": 0..10}`. *Relative* shows all of a
prompt's candidates in one call, shuffled (a seeded order per prompt) under letters, and asks for
`{"scores": {"A": 0..10, ...}}`; it records the mean score each position received, so a judge that favours
the first answer it reads shows it (`position_means`).

The judge's reply is hostile input like any model answer: its size is capped, the verdict must be one JSON
object (optionally in a ```json fence) with numbers in range. A malformed verdict, a refusal, a missing
candidate, a 4xx, a 429 or 5xx after the retries, a timeout: that candidate stays *unscored* (None) and the
failure is counted by kind (`UNSCORED_REASONS`) in `stats`. Verdicts are cached on disk, keyed by judge
model, rubric, mode, prompt and candidates, so a resumed round pays for nothing twice. All network I/O goes
through one `httpx.Client` (tests swap its transport for fault shapes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import PromptRecord, canonical_json

__all__ = ["UNSCORED_REASONS", "JudgeScorer", "JudgeStats"]

#: Why a judge left a candidate unscored: a fixed set (metric labels).
UNSCORED_REASONS = (
    "malformed",
    "refusal",
    "missing",
    "truncated",
    "http_4xx",
    "http_5xx",
    "rate_limited",
    "timeout",
    "unreachable",
)

log = logging.getLogger(__name__)

_MAX_REPLY_BYTES = 256 * 1024
_MAX_VERDICT_CHARS = 16 * 1024
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)

_POINTWISE = (
    "You are a strict grader. Grade the answer to the user's request by this rubric:\n{rubric}\n\n"
    'Reply with only a JSON object: {{"score": <integer 0 to 10>}}.'
)
_RELATIVE = (
    "You are a strict grader. Grade each of the {n} candidate answers to the user's request by this rubric:\n"
    '{rubric}\n\nReply with only a JSON object: {{"scores": {{{letters}}}}}, each an integer 0 to 10.'
)


@dataclass
class JudgeStats:
    """What the judge did: calls by outcome, tokens, cache hits, unscored candidates by reason, positions."""

    calls: Counter[str] = field(default_factory=Counter)  # ok, retried, failed
    failures: Counter[str] = field(default_factory=Counter)  # by UNSCORED_REASONS
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: int = 0
    position_sums: list[float] = field(default_factory=list)
    position_counts: list[int] = field(default_factory=list)

    def position_means(self) -> list[float | None]:
        return [s / c if c else None for s, c in zip(self.position_sums, self.position_counts, strict=True)]

    def summary(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "failures": dict(self.failures),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached": self.cached,
            "position_means": [None if m is None else round(m, 4) for m in self.position_means()],
        }


class _Unscored(Exception):
    """A call or a verdict that gives no score; `kind` is its counted reason."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


class JudgeScorer:
    """Scores candidates with an LLM judge behind an OpenAI-compatible `/chat/completions`."""

    name = "judge"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        rubric: str,
        mode: str = "pointwise",
        api_key_env: str | None = None,
        api_key_file: str | None = None,
        timeout_seconds: float = 60.0,
        max_retries: int = 3,
        backoff_seconds: float = 1.0,
        concurrency: int = 4,
        max_tokens: int = 200,
        structured: bool = True,
        cache_dir: str | None = None,
        seed: int = 0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if mode not in ("pointwise", "relative"):
            raise ConfigurationError(f"judge mode {mode!r}: choose pointwise or relative")
        if not rubric.strip():
            raise ConfigurationError("a judge needs a rubric: what makes an answer good for this task")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"judge base_url {base_url!r} must be http(s)://host[:port]/v1")
        self.model, self.rubric, self.mode = model, rubric.strip(), mode
        self.timeout_seconds = timeout_seconds
        self.max_retries, self.backoff_seconds, self.max_tokens = max_retries, backoff_seconds, max_tokens
        self.structured, self.seed, self.concurrency = structured, seed, max(1, concurrency)
        headers = {"Authorization": f"Bearer {key}"} if (key := _api_key(api_key_env, api_key_file)) else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_seconds, transport=transport
        )
        self._cache = _VerdictCache(Path(cache_dir).expanduser() / "judge-cache.sqlite") if cache_dir else None
        self._lock = threading.Lock()
        self.stats = JudgeStats()

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        if not responses:
            return []
        if self.mode == "relative":
            return self._relative(record, list(responses))
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(responses))) as pool:
            return list(pool.map(lambda answer: self._pointwise(record, answer), responses))

    def close(self) -> None:
        self._client.close()
        if self._cache is not None:
            self._cache.close()

    # ------------------------------------------------------------------ modes
    def _pointwise(self, record: PromptRecord, answer: str) -> float | None:
        key = self._key(record, [answer])
        cached = self._cached(key)
        if cached is not None:
            return cached[0]
        messages = [
            {"role": "system", "content": _POINTWISE.format(rubric=self.rubric)},
            {"role": "user", "content": f"Request:\n{_conversation(record)}\n\nAnswer:\n{answer}"},
        ]
        schema = {"type": "object", "properties": {"score": _SCORE}, "required": ["score"]}
        try:
            verdict = self._ask(messages, schema)
            value = _grade(verdict.get("score"))
        except _Unscored as exc:
            return self._unscored(exc, 1)[0]
        self._store(key, [value])
        return value

    def _relative(self, record: PromptRecord, answers: list[str]) -> list[float | None]:
        key = self._key(record, answers)
        cached = self._cached(key)
        if cached is not None:
            return cached
        order = list(range(len(answers)))
        random.Random(f"{self.seed}:{key}").shuffle(order)  # the same prompt is shown the same way on resume
        letters = _LETTERS[: len(answers)] if len(answers) <= len(_LETTERS) else None
        if letters is None:
            raise ConfigurationError(f"a relative judge ranks at most {len(_LETTERS)} candidates per call")
        shown = "\n\n".join(f"[{letters[i]}]\n{answers[j]}" for i, j in enumerate(order))
        messages = [
            {
                "role": "system",
                "content": _RELATIVE.format(
                    rubric=self.rubric, n=len(answers), letters=", ".join(f'"{c}": <0-10>' for c in letters)
                ),
            },
            {"role": "user", "content": f"Request:\n{_conversation(record)}\n\nCandidates:\n\n{shown}"},
        ]
        props = {c: _SCORE for c in letters}
        schema = {
            "type": "object",
            "properties": {"scores": {"type": "object", "properties": props, "required": list(letters)}},
            "required": ["scores"],
        }
        try:
            grades = self._ask(messages, schema).get("scores")
            if not isinstance(grades, dict):
                raise _Unscored("malformed", "no scores object")
        except _Unscored as exc:
            return self._unscored(exc, len(answers))
        values: list[float | None] = [None] * len(answers)
        for position, (letter, index) in enumerate(zip(letters, order, strict=True)):
            try:
                values[index] = _grade(grades.get(letter))
            except _Unscored as exc:
                self._unscored(_Unscored("missing" if letter not in grades else exc.kind), 1)
                continue
            self._note_position(position, values[index] or 0.0)
        if all(v is not None for v in values):
            self._store(key, values)
        return values

    # ------------------------------------------------------------------ one call
    def _ask(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }
        if self.structured:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
        reply = self._post(body)
        try:
            choice = reply["choices"][0]
            content = choice["message"].get("content") or ""
            usage = reply.get("usage") or {}
            with self._lock:
                self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                self.stats.completion_tokens += int(usage.get("completion_tokens") or 0)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise _Unscored("malformed", "not a chat completion") from None
        if choice.get("finish_reason") == "length":
            raise _Unscored("truncated", f"the verdict ran past max_tokens {self.max_tokens}")
        return _verdict(str(content))

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(self.max_retries + 1):
            delay = self.backoff_seconds * 2**attempt
            try:
                deadline = time.monotonic() + self.timeout_seconds  # a reply that drips in slowly is cut off too
                with self._client.stream("POST", "/chat/completions", json=body) as response:
                    data = _read_capped(response, deadline)
                    status = response.status_code
                    retry_after = response.headers.get("retry-after")
            except httpx.TimeoutException:
                kind = "timeout"
            except httpx.TransportError:
                kind = "unreachable"
            else:
                if status == 200:
                    self._count_call("ok")
                    try:
                        parsed = json.loads(data)
                    except ValueError:
                        raise _Unscored("malformed", "the reply is not JSON") from None
                    if not isinstance(parsed, dict):
                        raise _Unscored("malformed", "the reply is not a JSON object")
                    return parsed
                if status != 429 and status < 500:
                    self._count_call("failed")
                    raise _Unscored("http_4xx", f"HTTP {status}: {data[:200].decode(errors='replace')}")
                kind = "rate_limited" if status == 429 else "http_5xx"
                if retry_after and retry_after.isdigit():
                    delay = min(float(retry_after), 60.0)
            if attempt == self.max_retries:
                self._count_call("failed")
                raise _Unscored(kind, f"after {self.max_retries + 1} attempts")
            self._count_call("retried")
            time.sleep(delay)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ bookkeeping
    def _key(self, record: PromptRecord, answers: Sequence[str]) -> str:
        # An agent prompt keys on its tools and calls too; a plain one as before, so existing caches still hit.
        asked = _conversation(record) if record.uses_tools else [[m.role, m.content] for m in record.messages]
        material = json.dumps([self.model, self.rubric, self.mode, asked, list(answers)])
        return hashlib.sha256(material.encode()).hexdigest()

    def _cached(self, key: str) -> list[float | None] | None:
        if self._cache is None:
            return None
        values = self._cache.get(key)
        if values is not None:
            with self._lock:
                self.stats.cached += 1
        return values

    def _store(self, key: str, values: Sequence[float | None]) -> None:
        if self._cache is not None:
            self._cache.put(key, list(values))

    def _count_call(self, outcome: str) -> None:
        with self._lock:
            self.stats.calls[outcome] += 1

    def _note_position(self, position: int, value: float) -> None:
        with self._lock:
            grow = position + 1 - len(self.stats.position_sums)
            self.stats.position_sums.extend([0.0] * max(0, grow))
            self.stats.position_counts.extend([0] * max(0, grow))
            self.stats.position_sums[position] += value
            self.stats.position_counts[position] += 1

    def _unscored(self, exc: _Unscored, count: int) -> list[float | None]:
        with self._lock:
            first = not self.stats.failures
            self.stats.failures[exc.kind] += count
        if first:
            log.warning("the judge left %d candidates unscored: %s (further failures are counted)", count, exc)
        return [None] * count


_SCORE = {"type": "integer", "minimum": 0, "maximum": 10}


def _grade(value: object) -> float:
    """A verdict's 0..10 score as a score in [0, 1]; anything else is malformed."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10:
        raise _Unscored("malformed" if value is not None else "missing", f"score {value!r}")
    return float(value) / 10.0


def _verdict(content: str) -> dict[str, Any]:
    text = content.strip()
    if not text or ("{" not in text and "[" not in text):
        raise _Unscored("refusal", text[:100])
    if len(text) > _MAX_VERDICT_CHARS:
        raise _Unscored("malformed", f"a verdict of {len(text)} characters")
    fenced = _FENCE.match(text)
    try:
        verdict = json.loads(fenced.group(1) if fenced else text)
    except (ValueError, RecursionError):
        raise _Unscored("malformed", text[:100]) from None
    if not isinstance(verdict, dict):
        raise _Unscored("malformed", "the verdict is not a JSON object")
    return verdict


def _read_capped(response: httpx.Response, deadline: float) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > _MAX_REPLY_BYTES:
            raise _Unscored("malformed", f"a reply over {_MAX_REPLY_BYTES} bytes")
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the reply took longer than timeout_seconds")
        chunks.append(chunk)
    return b"".join(chunks)


def _conversation(record: PromptRecord) -> str:
    """The conversation as the judge reads it: the tools the request offers (their JSON schemas) and `tool_choice`,
    then each turn with the calls it made and the call each tool result answers."""
    lines = (
        [f"tools offered: {canonical_json([t.as_dict()['function'] for t in record.tools])}"] if record.tools else []
    )
    if record.tool_choice is not None:
        lines.append(f"tool_choice: {record.tool_choice}")
    for m in record.messages:
        lines.append(f"{m.role}: {m.content}" if m.tool_call_id is None else f"tool ({m.tool_call_id}): {m.content}")
        lines += [f"{m.role} calls {c.name}({c.arguments}) [{c.id}]" for c in m.tool_calls]
    return "\n".join(lines)


def _api_key(env: str | None, path: str | None) -> str | None:
    if env and path:
        raise ConfigurationError("give the judge's API key as api_key_env or api_key_file, not both")
    if env:
        key = os.environ.get(env)
        if not key:
            raise ConfigurationError(f"the judge's API key variable {env} is not set")
        return key
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read the judge's API key file {path}: {exc.strerror}") from None
    return None


class _VerdictCache:
    """Verdicts by key in a small SQLite file (shared by the judge's threads)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, scores TEXT NOT NULL)")
        self._lock = threading.Lock()

    def get(self, key: str) -> list[float | None] | None:
        with self._lock:
            row = self._conn.execute("SELECT scores FROM verdicts WHERE key=?", (key,)).fetchone()
        return list(json.loads(row[0])) if row else None

    def put(self, key: str, values: list[float | None]) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO verdicts VALUES (?, ?)", (key, json.dumps(values)))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

"""Prompt redaction before storage: e-mail addresses, phone numbers, keys and tokens.

Redaction replaces a match with a typed placeholder (`[EMAIL]`, `[PHONE]`, `[SECRET]`)
so that the buffer never holds the original text, while the prompt keeps its shape
for training. Patterns are deliberately eager: a false positive costs a few tokens
of context, a false negative leaks a secret into an adapter.

It runs on every logged record, so it must stay linear in the text whatever the text is:
every quantifier is bounded, e-mail addresses are found from their `@` outwards (a pattern
that scans for a local part first is quadratic on "a.a.a.…" without an `@`), and JWTs from
their `eyJ` with each run of token characters scanned once. The gateway redacts on a thread
beside its event loop: the patterns are searched a window at a time, so no regex call holds
the interpreter for more than a few milliseconds.
Metadata values are redacted too, and whole values under keys that name a person or a
secret (`user_email`, `api_key`, `requester`, …) are replaced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from taoflow.connectors.records import PromptRecord, ToolCall

__all__ = ["REDACTION_KINDS", "SENSITIVE_KEY", "Redactor"]

_SECRETS = re.compile(
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,512}"  # OpenAI-style and similar API keys
    r"|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,512}"  # Stripe keys
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids (long-term and temporary)
    r"|(?i:aws_?secret_?access_?key|secret_?access_?key)[\"']?\s{0,8}[:=]\s{0,8}[\"']?[A-Za-z0-9/+=]{40}"  # AWS secrets
    r"|\bgh[pousr]_[A-Za-z0-9]{30,255}"  # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{22,255}"  # GitHub fine-grained tokens
    r"|\bAIza[0-9A-Za-z_\-]{35}"  # Google API keys
    r"|\bhf_[A-Za-z0-9]{30,64}"  # Hugging Face tokens
    r"|\bxox[abpr]-[A-Za-z0-9\-]{10,255}"  # Slack tokens
    r"|(?i:bearer)\s{1,8}[A-Za-z0-9._\-~+/]{16,4096}={0,2}"
    r"|(?i:basic)\s{1,8}[A-Za-z0-9+/]{8,4096}={0,2}"  # Authorization: Basic
    r"|(?i:\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token))[\"']?\s{0,8}[:=]\s{0,8}"
    r"[\"']?[^\s\"',;&]{1,512}"  # password=…, api_key: …
)
_PHONES = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{2,4}\)[\s.\-]?|\d{2,4}[\s.\-])\d{3,4}[\s.\-]\d{3,4}\b"
    r"|(?<![\w+])\+[1-9]\d{7,14}\b"  # E.164, written without separators
)
#: The longest text one match of _SECRETS or _PHONES spans (every quantifier in them is bounded): a window of the
#: text is searched with this much of what follows it, so no match is cut at a window's end.
_LONGEST_SECRET = 4200
_LONGEST_PHONE = 64
#: Characters searched per regex call: between calls another thread (the gateway's event loop) may run.
_WINDOW = 16384
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_\-]*")
_LOCAL_END = re.compile(r"[A-Za-z0-9._%+\-]+$")
_DOMAIN_START = re.compile(r"[A-Za-z0-9.\-]+")
_TLD = re.compile(r"\.[A-Za-z]{2,63}$")
_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z ]{0,32}PRIVATE KEY-----")
_KEY_END = re.compile(r"-----END [A-Z ]{0,32}PRIVATE KEY-----")
#: The longest private key block looked for: a header with no end within it is left alone.
_KEY_SPAN = 16384

#: Metadata keys whose whole value is replaced: they name a person, an account or a credential.
SENSITIVE_KEY = re.compile(
    r"(?i)e-?mail|phone|user|requester|owner|customer|address|ip_?addr"
    r"|token|secret|password|passwd|api_?key|credential|authorization|cookie|session"
)
REDACTION_KINDS: tuple[str, ...] = ("secrets", "emails", "phones")


def _emails(text: str) -> str:
    """Addresses found from each `@`: at most 64 characters back and 255 forward, so linear in the text."""
    if "@" not in text:
        return text
    out: list[str] = []
    done = 0
    at = text.find("@")
    while at != -1:
        left = _LOCAL_END.search(text, max(done, at - 64), at)
        right = _DOMAIN_START.match(text, at + 1, at + 256)
        tld = _TLD.search(right.group().rstrip(".-")) if right is not None else None
        if left is not None and tld is not None:
            out += [text[done : left.start()], "[EMAIL]"]
            done = at + 1 + tld.end()
        at = text.find("@", max(at + 1, done))
    return "".join([*out, text[done:]])


def _sub_windowed(pattern: re.Pattern[str], text: str, placeholder: str, *, longest: int) -> str:
    """`pattern.sub(placeholder, text)` a window at a time: the same matches (none is longer than `longest`), but
    no single call scans more than _WINDOW + `longest` characters, so the GIL is never held for a whole megabyte."""
    if len(text) <= _WINDOW + longest:
        return pattern.sub(placeholder, text)
    out: list[str] = []
    done = pos = 0
    while pos < len(text):
        window_end = min(len(text), pos + _WINDOW)
        limit = min(len(text), window_end + longest)
        found = pattern.search(text, pos, limit)
        if found is not None and found.end() >= limit and limit < len(text):
            found = pattern.match(text, found.start())  # as the whole text has it (a boundary at `limit` is not)
        if found is None or found.start() >= window_end:
            pos = window_end
            continue
        out += [text[done : found.start()], placeholder]
        done = pos = max(found.end(), found.start() + 1)
    return "".join([*out, text[done:]])


def _jwts(text: str) -> str:
    """JWTs (`eyJ…` `.…` `.…`, each part 8-4096 token characters), found from each `eyJ` and linear in the text: the
    run of token characters after an `eyJ` is scanned once for every `eyJ` inside it (a regex tried at each `eyJ`
    of 1 MB of "eyJ-eyJ-…" scans 4 096 characters at each: seconds)."""
    if "eyJ" not in text:
        return text
    out: list[str] = []
    done = 0
    at = text.find("eyJ")
    while at != -1:
        dot = _run_end(text, at + 3)
        end = None
        if text.startswith(".", dot):
            first = _jwt_start(text, max(at, dot - 3 - 4096), dot - 3 - 8)
            end = _jwt_end(text, dot) if first is not None else None
            if end is not None and first is not None:
                out += [text[done:first], "[SECRET]"]
                done = end
        at = text.find("eyJ", end if end is not None else dot)
    return "".join([*out, text[done:]])


def _run_end(text: str, start: int) -> int:
    """Where the run of token characters from `start` ends (`start` itself for none)."""
    run = _TOKEN_RUN.match(text, start)
    return start if run is None else run.end()


def _jwt_start(text: str, low: int, high: int) -> int | None:
    """The first `eyJ` in [low, high] that starts a word (`\\b`), or None."""
    if high < low:
        return None
    at = text.find("eyJ", low, high + 3)
    while at != -1:
        if at == 0 or not (text[at - 1].isalnum() or text[at - 1] == "_"):
            return at
        at = text.find("eyJ", at + 1, high + 3)
    return None


def _jwt_end(text: str, dot: int) -> int | None:
    """Where a JWT whose header ends at `dot` ends: a payload of 8-4096 characters, a dot, a signature of 8 or more
    (at most 4096 of them taken); None when the text does not go on like that."""
    second = _run_end(text, dot + 1)
    if not 8 <= second - dot - 1 <= 4096 or not text.startswith(".", second):
        return None
    third = _run_end(text, second + 1)
    return None if third - second - 1 < 8 else min(third, second + 1 + 4096)


def _private_keys(text: str) -> str:
    """PEM private key blocks: each header's end is looked for within _KEY_SPAN characters only."""
    if "PRIVATE KEY-----" not in text:
        return text
    out: list[str] = []
    done = 0
    for begin in _KEY_BEGIN.finditer(text):
        if begin.start() < done:
            continue
        end = _KEY_END.search(text, begin.end(), begin.end() + _KEY_SPAN)
        if end is not None:
            out += [text[done : begin.start()], "[SECRET]"]
            done = end.end()
    return "".join([*out, text[done:]])


class Redactor:
    """Applies the chosen redaction kinds, in a fixed order (secrets before e-mails)."""

    def __init__(self, kinds: Iterable[str]) -> None:
        chosen = set(kinds)
        unknown = chosen - set(REDACTION_KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kinds {sorted(unknown)}; choose from {list(REDACTION_KINDS)}")
        self.kinds = tuple(k for k in REDACTION_KINDS if k in chosen)

    @property
    def enabled(self) -> bool:
        return bool(self.kinds)

    def text(self, text: str) -> str:
        if "secrets" in self.kinds:
            text = _jwts(_sub_windowed(_SECRETS, _private_keys(text), "[SECRET]", longest=_LONGEST_SECRET))
        if "emails" in self.kinds:
            text = _emails(text)
        if "phones" in self.kinds:
            text = _sub_windowed(_PHONES, text, "[PHONE]", longest=_LONGEST_PHONE)
        return text

    def record(self, record: PromptRecord) -> PromptRecord:
        if not self.kinds:
            return record
        return replace(
            record,
            messages=tuple(
                replace(m, content=self.text(m.content), tool_calls=tuple(self.call(c) for c in m.tool_calls))
                for m in record.messages
            ),
            response=self.text(record.response) if record.response is not None else None,
            metadata={k: self.value(k, v) for k, v in record.metadata.items()},
            response_calls=tuple(self.call(c) for c in record.response_calls),
        )

    def call(self, call: ToolCall) -> ToolCall:
        """A tool call with its arguments redacted as metadata is (a `password` argument replaced, text redacted);
        arguments that needed nothing keep their text exactly. Tool definitions are the application's, not the
        user's, and are kept as they are."""
        parsed = call.parsed_arguments()
        if not isinstance(parsed, dict):
            return replace(call, arguments=self.text(call.arguments))
        redacted = {k: self.value(str(k), v) for k, v in parsed.items()}
        if redacted == parsed:
            return call
        return replace(call, arguments=json.dumps(redacted, ensure_ascii=False))

    def value(self, key: str, value: Any, depth: int = 0) -> Any:
        """A metadata value: replaced under a sensitive key, else its text redacted (nested ones too). Numbers are
        no one's secret: a sensitive key's number, or list of numbers (`prompt_token_ids`), is kept."""
        if SENSITIVE_KEY.search(key) and value not in (None, "") and not _numbers(value):
            return "[REDACTED]"
        if isinstance(value, str):
            return self.text(value)
        if depth > 8:
            return "[REDACTED]"  # deeper than any log's metadata: not worth walking
        if isinstance(value, dict):
            return {k: self.value(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(key, v, depth + 1) for v in value]
        return value

    def payload(self, raw: bytes) -> bytes:
        """A dead letter's bytes as they may be stored: the text redacted (undecodable bytes replaced)."""
        if not self.kinds:
            return raw
        return self.text(raw.decode("utf-8", errors="replace")).encode("utf-8", errors="replace")


def _numbers(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    return isinstance(value, bool | int | float)

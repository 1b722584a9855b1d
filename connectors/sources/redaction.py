"""Prompt redaction before storage: e-mail addresses, phone numbers, keys and tokens.

Redaction replaces a match with a typed placeholder (`[EMAIL]`, `[PHONE]`, `[SECRET]`)
so that the buffer never holds the original text, while the prompt keeps its shape
for training. Patterns are deliberately eager: a false positive costs a few tokens
of context, a false negative leaks a secret into an adapter.

It runs on every logged record, so it must stay linear in the text whatever the text is:
every quantifier is bounded, and e-mail addresses are found from their `@` outwards
(a pattern that scans for a local part first is quadratic on "a.a.a.…" without an `@`).
Metadata values are redacted too, and whole values under keys that name a person or a
secret (`user_email`, `api_key`, `requester`, …) are replaced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from taoflow.connectors.records import Message, PromptRecord

__all__ = ["REDACTION_KINDS", "SENSITIVE_KEY", "Redactor"]

_SECRETS = re.compile(
    r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,512}"  # OpenAI-style and similar API keys
    r"|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,512}"  # Stripe keys
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids (long-term and temporary)
    r"|(?i:aws_?secret_?access_?key|secret_?access_?key)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}"  # AWS secret keys
    r"|\bgh[pousr]_[A-Za-z0-9]{30,255}"  # GitHub tokens
    r"|\bgithub_pat_[A-Za-z0-9_]{22,255}"  # GitHub fine-grained tokens
    r"|\bAIza[0-9A-Za-z_\-]{35}"  # Google API keys
    r"|\bhf_[A-Za-z0-9]{30,64}"  # Hugging Face tokens
    r"|\bxox[abpr]-[A-Za-z0-9\-]{10,255}"  # Slack tokens
    r"|\beyJ[A-Za-z0-9_\-]{8,4096}\.[A-Za-z0-9_\-]{8,4096}\.[A-Za-z0-9_\-]{8,4096}"  # JWTs
    r"|(?i:bearer)\s{1,8}[A-Za-z0-9._\-~+/]{16,4096}=*"
    r"|(?i:basic)\s{1,8}[A-Za-z0-9+/]{8,4096}={0,2}"  # Authorization: Basic
    r"|(?i:\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token))[\"']?\s{0,8}[:=]\s{0,8}"
    r"[\"']?[^\s\"',;&]{1,512}"  # password=…, api_key: …
)
_PHONES = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{2,4}\)[\s.\-]?|\d{2,4}[\s.\-])\d{3,4}[\s.\-]\d{3,4}\b"
    r"|(?<![\w+])\+[1-9]\d{7,14}\b"  # E.164, written without separators
)
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
            text = _SECRETS.sub("[SECRET]", _private_keys(text))
        if "emails" in self.kinds:
            text = _emails(text)
        if "phones" in self.kinds:
            text = _PHONES.sub("[PHONE]", text)
        return text

    def record(self, record: PromptRecord) -> PromptRecord:
        if not self.kinds:
            return record
        return replace(
            record,
            messages=tuple(Message(m.role, self.text(m.content)) for m in record.messages),
            response=self.text(record.response) if record.response is not None else None,
            metadata={k: self.value(k, v) for k, v in record.metadata.items()},
        )

    def value(self, key: str, value: Any, depth: int = 0) -> Any:
        """A metadata value: replaced under a sensitive key, else its text redacted (nested ones too)."""
        if SENSITIVE_KEY.search(key) and value not in (None, "") and not isinstance(value, bool | int | float):
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

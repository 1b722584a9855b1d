"""Prompt redaction before storage: e-mail addresses, phone numbers, keys and tokens.

Redaction replaces a match with a typed placeholder (`[EMAIL]`, `[PHONE]`, `[SECRET]`)
so that the buffer never holds the original text, while the prompt keeps its shape
for training. Patterns are deliberately eager: a false positive costs a few tokens
of context, a false negative leaks a secret into an adapter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from taoflow.connectors.records import Message, PromptRecord

__all__ = ["REDACTION_KINDS", "Redactor"]

_PATTERNS: dict[str, tuple[str, re.Pattern[str]]] = {
    "secrets": (
        "[SECRET]",
        re.compile(
            r"(?:\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{16,}"  # OpenAI-style and similar API keys
            r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key ids
            r"|\bgh[pousr]_[A-Za-z0-9]{30,}"  # GitHub tokens
            r"|\bxox[abpr]-[A-Za-z0-9\-]{10,}"  # Slack tokens
            r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWTs
            r"|(?i:bearer)\s+[A-Za-z0-9._\-~+/]{16,}=*"
            r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----)"
        ),
    ),
    "emails": ("[EMAIL]", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")),
    "phones": (
        "[PHONE]",
        re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{2,4}\)[\s.\-]?|\d{2,4}[\s.\-])\d{3,4}[\s.\-]\d{3,4}\b"),
    ),
}
REDACTION_KINDS: tuple[str, ...] = tuple(_PATTERNS)


class Redactor:
    """Applies the chosen redaction kinds, in a fixed order (secrets before e-mails)."""

    def __init__(self, kinds: Iterable[str]) -> None:
        chosen = set(kinds)
        unknown = chosen - set(_PATTERNS)
        if unknown:
            raise ValueError(f"unknown redaction kinds {sorted(unknown)}; choose from {list(_PATTERNS)}")
        self._patterns = [_PATTERNS[k] for k in REDACTION_KINDS if k in chosen]

    @property
    def enabled(self) -> bool:
        return bool(self._patterns)

    def text(self, text: str) -> str:
        for placeholder, pattern in self._patterns:
            text = pattern.sub(placeholder, text)
        return text

    def record(self, record: PromptRecord) -> PromptRecord:
        if not self._patterns:
            return record
        return replace(
            record,
            messages=tuple(Message(m.role, self.text(m.content)) for m in record.messages),
            response=self.text(record.response) if record.response is not None else None,
        )

"""A user's own graded verifier, as the issue's users wrote them: 1.0 for the exact short answer, 0.5 for the right
number in a wordy answer, 0.0 otherwise (used by tests/e2e/test_round.py through `type: python`)."""

from __future__ import annotations

import re

from taoflow.connectors.records import PromptRecord


def partial_credit(record: PromptRecord, response: str) -> float:
    a, b = (int(x) for x in re.findall(r"\d+", record.last_user_text)[:2])
    answer = str(a + b)
    if response.strip().rstrip(".") == answer:
        return 1.0
    return 0.5 if answer in re.findall(r"\d+", response) else 0.0

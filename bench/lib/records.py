"""An inference-log line as benchmarks make them: a prompt and a logged answer of about SIZE['chars'] characters each
(2.2 KB at the default), in the Databricks shape taoflow's sources parse."""

from __future__ import annotations

import json

__all__ = ["SIZE", "TEXT", "record"]

TEXT = (
    "The customer writes that the invoice total does not match the order confirmation and asks for a "
    "corrected invoice, a refund of the difference and an explanation of the shipping surcharge. "
)
SIZE = {"chars": 1000}


def record(i: int) -> bytes:
    """An inference-log line: a prompt and a logged answer of about SIZE['chars'] characters each."""
    body = (TEXT * (1 + SIZE["chars"] // len(TEXT)))[: SIZE["chars"]]
    return json.dumps(
        {
            "id": f"req-{i}",
            "task": f"task-{i % 4}",
            "request": {"model": "m", "messages": [{"role": "user", "content": f"Ticket {i}: {body}"}]},
            "response": {"id": f"req-{i}", "created": 1790000000, "choices": [{"message": {"content": body}}]},
        }
    ).encode()

"""The capture sink protocol: a batch of records in, all of them durable in the sink or an error out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["CaptureSink", "Captured"]


@dataclass(frozen=True)
class Captured:
    """One spooled record: its spool sequence number, request id (the Kafka key) and JSON bytes."""

    seq: int
    key: str
    value: bytes
    at: float


class CaptureSink(Protocol):
    name: str

    def send(self, records: Sequence[Captured]) -> None:
        """Write every record or raise (TemporaryError when the sink is unreachable: the batch is sent again)."""
        ...

    def close(self) -> None: ...

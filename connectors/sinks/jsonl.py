"""Captured exchanges appended to daily JSON-lines files (what `source.kind: jsonl` reads)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from taoflow.connectors.errors import TemporaryError
from taoflow.connectors.sinks.base import Captured

__all__ = ["JsonlSink"]


class JsonlSink:
    name = "jsonl"

    def __init__(self, directory: Path, *, gateway: str) -> None:
        self.directory = directory
        self.gateway = gateway

    def send(self, records: Sequence[Captured]) -> None:
        by_day: dict[str, list[bytes]] = {}
        for r in records:
            by_day.setdefault(time.strftime("%Y%m%d", time.gmtime(r.at)), []).append(r.value + b"\n")
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            for day, lines in by_day.items():
                path = self.directory / f"capture-{day}-{self.gateway}.jsonl"
                # Captured exchanges are prompts and answers: owner-only.
                with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as f:
                    f.write(b"".join(lines))
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as exc:
            raise TemporaryError(f"cannot append to {self.directory}: {exc}") from None

    def close(self) -> None:
        pass

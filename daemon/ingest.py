"""From raw source items to buffered prompts: parse, filter, redact, store or dead-letter.

Nothing read is ever dropped silently: a record is buffered, recognised as a
duplicate, or written to the dead letter with its reason and the raw bytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from taoflow.connectors.errors import RecordError
from taoflow.connectors.formats import parse_payload
from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.redaction import Redactor
from taoflow.daemon.buffer import PromptBuffer

__all__ = ["IngestReport", "Ingestor"]


@dataclass
class IngestReport:
    read: int = 0
    added: int = 0
    duplicates: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    added_by_task: Counter[str] = field(default_factory=Counter)


class Ingestor:
    """Applies the ingest settings to items of one source and writes the buffer in batches."""

    def __init__(
        self,
        buffer: PromptBuffer,
        *,
        source: str,
        default_task: str = "default",
        redactor: Redactor | None = None,
        max_prompt_chars: int = 16_000,
        batch_size: int = 500,
    ) -> None:
        self._buffer = buffer
        self._source = source
        self._default_task = default_task
        self._redactor = redactor or Redactor([])
        self._max_chars = max_prompt_chars
        self._batch_size = batch_size

    def run(self, items: Iterable[SourceItem]) -> IngestReport:
        report = IngestReport()
        batch: list[tuple[PromptRecord, str | None]] = []
        for item in items:
            report.read += 1
            record = self._accept(item, report)
            if record is not None:
                batch.append((record, None))
            if len(batch) >= self._batch_size:
                self._flush(batch, report)
        self._flush(batch, report)
        return report

    def _accept(self, item: SourceItem, report: IngestReport) -> PromptRecord | None:
        try:
            if item.error is not None:
                reason, _, detail = item.error.partition(": ")
                raise RecordError(reason, detail)
            record = parse_payload(item.payload, default_task=self._default_task)
            chars = sum(len(m.content) for m in record.messages)
            if chars > self._max_chars:
                raise RecordError("too_long", f"{chars} prompt characters > {self._max_chars}")
        except RecordError as exc:
            self._buffer.dead_letter(
                source=self._source, origin=item.origin, reason=exc.reason, detail=exc.detail, payload=item.payload
            )
            report.dead_lettered[exc.reason] += 1
            return None
        return self._redactor.record(record)

    def _flush(self, batch: list[tuple[PromptRecord, str | None]], report: IngestReport) -> None:
        if not batch:
            return
        result = self._buffer.add_many(batch, source=self._source)
        report.added += result.added
        report.duplicates += result.duplicates
        report.added_by_task.update(result.added_by_task)
        batch.clear()

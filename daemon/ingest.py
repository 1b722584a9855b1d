"""From raw source items to buffered prompts: parse, filter, redact, store or dead-letter.

Nothing read is ever dropped silently: a record is buffered, recognised as a
duplicate, skipped by a configured filter (counted by reason), or written to the
dead letter with its reason and the raw bytes. When `run` returns, all of that is
committed to the database: a streaming source may then acknowledge the items.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from taoflow.connectors.errors import RecordError
from taoflow.connectors.formats import parse_payload
from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.redaction import Redactor
from taoflow.daemon.buffer import PromptBuffer
from taoflow.daemon.metrics import IngestMetrics
from taoflow.policies.ingest_filter import IngestFilter, decide_ingest

__all__ = ["IngestReport", "Ingestor"]


@dataclass
class IngestReport:
    read: int = 0
    added: int = 0
    duplicates: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


class Ingestor:
    """Applies the ingest settings to items of one source and writes the buffer in batches."""

    def __init__(
        self,
        buffer: PromptBuffer,
        *,
        source: str,
        default_task: str = "default",
        redactor: Redactor | None = None,
        rules: IngestFilter | None = None,
        field_map: Mapping[str, str] | None = None,
        metrics: IngestMetrics | None = None,
        batch_size: int = 500,
    ) -> None:
        self._buffer = buffer
        self._source = source
        self._default_task = default_task
        self._redactor = redactor or Redactor([])
        self._rules = rules or IngestFilter()
        self._field_map = dict(field_map or {})
        self._metrics = metrics
        self._batch_size = batch_size

    def run(
        self, items: Iterable[SourceItem], *, also: Callable[[sqlite3.Connection], object] | None = None
    ) -> IngestReport:
        """Store everything; `also` runs in the transaction of the last batch (e.g. a checkpoint)."""
        report = IngestReport()
        batch: list[tuple[PromptRecord, str | None]] = []
        for item in items:
            report.read += 1
            record = self._accept(item, report)
            if record is not None:
                batch.append((record, item.origin))
            if len(batch) >= self._batch_size:
                self._flush(batch, report)
        self._flush(batch, report, also=also)
        return report

    def _accept(self, item: SourceItem, report: IngestReport) -> PromptRecord | None:
        try:
            if item.error is not None:
                reason, _, detail = item.error.partition(": ")
                raise RecordError(reason, detail)
            record = parse_payload(item.payload, default_task=self._default_task, field_map=self._field_map)
        except RecordError as exc:
            self._buffer.dead_letter(
                source=self._source, origin=item.origin, reason=exc.reason, detail=exc.detail, payload=item.payload
            )
            report.dead_lettered[exc.reason] += 1
            if self._metrics is not None:
                self._metrics.dead_lettered.labels(self._source, exc.reason).inc()
            return None
        status = record.metadata.get("status_code")
        decision = decide_ingest(
            request_id=record.request_id,
            task=record.task,
            status_code=int(status) if isinstance(status, int | float | str) and str(status).isdigit() else None,
            prompt_chars=sum(len(m.content) for m in record.messages),
            rules=self._rules,
        )
        if not decision.keep:
            report.skipped[decision.reason] += 1
            if self._metrics is not None:
                self._metrics.skipped.labels(self._source, decision.reason).inc()
            return None
        if decision.task != record.task:
            record = replace(record, task=decision.task)
        return self._redactor.record(record)

    def _flush(
        self,
        batch: list[tuple[PromptRecord, str | None]],
        report: IngestReport,
        *,
        also: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:
        if not batch and also is None:
            return
        result = self._buffer.add_many(batch, source=self._source, also=also)
        report.added += result.added
        report.duplicates += result.duplicates
        if self._metrics is not None:
            self._metrics.ingested.labels(self._source).inc(result.added)
            self._metrics.duplicates.labels(self._source).inc(result.duplicates)
        batch.clear()

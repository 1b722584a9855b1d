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
from itertools import islice

from taoflow.connectors.errors import RecordError, UnsupportedRecord
from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.sources.formats import parse_payload
from taoflow.connectors.sources.redaction import Redactor
from taoflow.daemon.ingest.metrics import IngestMetrics
from taoflow.daemon.store.buffer import BufferRow, DeadRow, IngestResult, PromptBuffer, buffer_row
from taoflow.policies.ingest_filter import IngestFilter, decide_ingest

__all__ = ["IngestReport", "Ingestor", "Prepared", "RecordPreparer"]


@dataclass
class IngestReport:
    read: int = 0
    added: int = 0
    duplicates: int = 0
    evicted: int = 0  # older (or unsampled) prompts let go to keep the buffer within its cap
    relabelled: int = 0  # of an unknown task, buffered under the default task
    dead_lettered: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class Prepared:
    """Items of one batch turned into buffer rows, dead letters and skips: no database touched yet."""

    read: int = 0
    bytes_read: int = 0  # of the object the items came from, where there is one
    rows: list[BufferRow] = field(default_factory=list)
    dead: list[DeadRow] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    relabelled: int = 0


@dataclass(frozen=True)
class RecordPreparer:
    """The ingest settings as a pure function of items; picklable, so parsing can run in worker processes."""

    default_task: str = "default"
    redactor: Redactor = field(default_factory=lambda: Redactor([]))
    rules: IngestFilter = field(default_factory=IngestFilter)
    field_map: Mapping[str, str] = field(default_factory=dict)

    def prepare(self, items: Iterable[SourceItem]) -> Prepared:
        prepared = Prepared()
        for item in items:
            prepared.read += 1
            self._prepare_one(item, prepared)
        return prepared

    def _prepare_one(self, item: SourceItem, prepared: Prepared) -> None:
        """Buffered, skipped or dead-lettered with a reason, whatever the bytes: a parser bug costs this record."""
        if item.skip is not None:
            prepared.skipped[item.skip] += 1
            return
        try:
            if item.error is not None:
                reason, _, detail = item.error.partition(": ")
                raise RecordError(reason, detail)
            record = parse_payload(item.payload, default_task=self.default_task, field_map=self.field_map)
            decision = decide_ingest(
                request_id=record.request_id,
                task=record.task,
                status_code=status_code(record.metadata.get("status_code")),
                prompt_chars=record.prompt_chars,
                rules=self.rules,
                uses_tools=record.uses_tools,
            )
            if not decision.keep:
                prepared.skipped[decision.reason] += 1
                return
            if decision.task != record.task:
                record = replace(record, task=decision.task)
            prepared.relabelled += decision.relabelled
            prepared.rows.append(buffer_row(self.redactor.record(record), item.origin))
        except UnsupportedRecord as exc:  # well-formed, not storable faithfully yet: counted, not a dead letter
            prepared.skipped[exc.reason] += 1
        except RecordError as exc:
            prepared.dead.append(self._dead(item, exc.reason, exc.detail))
        except Exception as exc:  # anything else is a bug of ours: it costs one record, never the stream
            prepared.dead.append(self._dead(item, "parser_error", f"{type(exc).__name__}: {exc}"))

    def identify(self, item: SourceItem) -> tuple[str, str] | None:
        """The request id and prompt hash a record is (or would be) buffered under, filters aside; None for a
        record that does not parse (a dead letter)."""
        if item.error is not None or item.skip is not None:
            return None
        try:
            record = parse_payload(item.payload, default_task=self.default_task, field_map=self.field_map)
            return record.request_id, self.redactor.record(record).prompt_hash
        except Exception:  # a RecordError, or a parser bug: either way the record was dead-lettered
            return None

    def dead_payload(self, item: SourceItem) -> bytes:
        """The bytes a dead letter of `item` holds."""
        return self._dead(item, "", "").payload

    def _dead(self, item: SourceItem, reason: str, detail: str) -> DeadRow:
        """A dead letter as it may be stored: bounded in size, and redacted like a prompt would be."""
        payload = item.payload
        if len(payload) > MAX_DEAD_PAYLOAD:
            detail = f"{detail} [record of {len(payload)} bytes; the first {MAX_DEAD_PAYLOAD} kept]"
            payload = payload[:MAX_DEAD_PAYLOAD]
        return DeadRow(item.origin, reason, self.redactor.text(detail[:2000]), self.redactor.payload(payload))


#: The most bytes of a record a dead letter keeps (its full size is in the detail): a 100 MB line is not stored.
MAX_DEAD_PAYLOAD = 64 << 10


def status_code(value: object) -> int | None:
    """A logged HTTP status as a number, or None for anything that is not one ("²" is a digit, not a status)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 3:
        return int(value.strip())
    return None


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
        self.preparer = RecordPreparer(
            default_task=default_task,
            redactor=redactor or Redactor([]),
            rules=rules or IngestFilter(),
            field_map=dict(field_map or {}),
        )
        self._metrics = metrics
        self._batch_size = batch_size

    def run(self, items: Iterable[SourceItem]) -> IngestReport:
        """Store everything, a batch per transaction."""
        report = IngestReport()
        iterator = iter(items)
        while batch := list(islice(iterator, self._batch_size)):
            self.store(self.preparer.prepare(batch), report)
        return report

    def store(
        self,
        prepared: Prepared,
        report: IngestReport,
        *,
        also: Callable[[sqlite3.Connection], object] | None = None,
    ) -> None:
        """Commit one prepared batch (prompts, dead letters, `also`) and count it in `report` and the metrics."""
        if prepared.rows or prepared.dead or also is not None:
            result = self._buffer.add_rows(prepared.rows, source=self._source, dead=prepared.dead, also=also)
        else:
            result = IngestResult(added=0, duplicates=0)
        report.read += prepared.read
        report.added += result.added
        report.duplicates += result.duplicates
        report.evicted += result.evicted
        report.relabelled += prepared.relabelled
        report.skipped.update(prepared.skipped)
        report.dead_lettered.update(d.reason for d in prepared.dead)
        if self._metrics is None:
            return
        self._metrics.ingested.labels(self._source).inc(result.added)
        self._metrics.duplicates.labels(self._source).inc(result.duplicates)
        self._metrics.relabelled.labels(self._source).inc(prepared.relabelled)
        for reason, count in prepared.skipped.items():
            self._metrics.skipped.labels(self._source, reason).inc(count)
        for dead in prepared.dead:
            self._metrics.dead_lettered.labels(self._source, dead.reason).inc()

"""The ingest loop of a streaming source: poll, store durably, then acknowledge.

One thread does all three in order, so an offset is committed only for records whose
buffer transaction (prompts and dead letters) has already committed. At the buffer cap
the source is paused rather than read and dropped; it resumes once rounds consume prompts.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.s3_source import ObjectRef
from taoflow.daemon.buffer import PromptBuffer
from taoflow.daemon.ingest import Ingestor, IngestReport
from taoflow.daemon.metrics import IngestMetrics
from taoflow.daemon.storage import Database

__all__ = ["ObjectSource", "StreamSource", "ingest_objects", "ingested_objects", "run_stream"]

log = logging.getLogger(__name__)


class StreamSource(Protocol):
    """A source whose items must be acknowledged after they are stored (Kafka)."""

    name: str

    def poll(self, *, timeout_s: float = 1.0) -> list[SourceItem]: ...

    def commit(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def lag(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def run_stream(
    source: StreamSource,
    ingestor: Ingestor,
    buffer: PromptBuffer,
    *,
    stop: threading.Event,
    buffer_cap: int,
    poll_timeout_s: float = 1.0,
    metrics: IngestMetrics | None = None,
) -> IngestReport:
    """Run until `stop` is set; return the totals. The source is committed and closed on the way out."""
    totals = IngestReport()
    try:
        while not stop.is_set():
            if buffer.pending() >= buffer_cap:
                source.pause()
            else:
                source.resume()
            items = source.poll(timeout_s=poll_timeout_s)
            if items:
                _merge(totals, ingestor.run(items))
                source.commit()
            if metrics is not None:
                metrics.last_poll.labels(source.name).set(time.time())
                for partition, lag in source.lag().items():
                    metrics.consumer_lag.labels(source.name, partition).set(lag)
    finally:
        source.close()
    return totals


def _merge(totals: IngestReport, report: IngestReport) -> None:
    totals.read += report.read
    totals.added += report.added
    totals.duplicates += report.duplicates
    totals.dead_lettered.update(report.dead_lettered)
    totals.skipped.update(report.skipped)


class ObjectSource(Protocol):
    """A source of whole objects, each read once (S3)."""

    name: str

    def pending(self, done: Collection[tuple[str, str]]) -> list[ObjectRef]: ...

    def fetch(self, ref: ObjectRef) -> bytes | None: ...

    def records(self, ref: ObjectRef, body: bytes) -> Iterator[SourceItem]: ...


def ingested_objects(db: Database, source: str) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in db.query("SELECT key, etag FROM ingested_objects WHERE source=?", (source,))}


def ingest_objects(
    source: ObjectSource,
    ingestor: Ingestor,
    buffer: PromptBuffer,
    db: Database,
    *,
    stop: threading.Event,
    buffer_cap: int,
    follow: bool,
    poll_interval_s: float = 30.0,
    prefetch: int = 2,
    metrics: IngestMetrics | None = None,
) -> IngestReport:
    """Ingest every new object; its checkpoint (key + ETag) commits in the same transaction as its last records.

    The next `prefetch` objects download on worker threads while the current one is parsed and stored.
    """
    totals = IngestReport()
    with ThreadPoolExecutor(max_workers=prefetch, thread_name_prefix="s3-fetch") as pool:
        while not stop.is_set():
            pending = source.pending(ingested_objects(db, source.name))
            if metrics is not None:
                metrics.objects_pending.labels(source.name).set(len(pending))
                metrics.last_poll.labels(source.name).set(time.time())
            downloads = deque(pool.submit(source.fetch, ref) for ref in pending[:prefetch])
            for index, ref in enumerate(pending):
                body = downloads.popleft().result()
                if index + prefetch < len(pending):
                    downloads.append(pool.submit(source.fetch, pending[index + prefetch]))
                if stop.is_set() or buffer.pending() >= buffer_cap:
                    break  # at the cap nothing more is stored: the rest stays pending until rounds make room
                if body is None:
                    continue  # replaced or deleted since listing: the next listing has its new version
                _merge(totals, ingestor.run(source.records(ref, body), also=_checkpoint(source.name, ref)))
                if metrics is not None:
                    metrics.objects_pending.labels(source.name).dec()
            for download in downloads:
                download.cancel()
            if not follow:
                break
            stop.wait(poll_interval_s)
    return totals


def _checkpoint(source: str, ref: ObjectRef) -> Callable[[sqlite3.Connection], object]:
    def record(conn: sqlite3.Connection) -> object:
        return conn.execute(
            "INSERT OR IGNORE INTO ingested_objects (source, key, etag, completed_at) VALUES (?, ?, ?, ?)",
            (source, ref.key, ref.etag, time.time()),
        )

    return record

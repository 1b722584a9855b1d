"""The ingest loop of a streaming source: poll, store durably, then acknowledge.

One thread does all three in order, so an offset is committed only for records whose
buffer transaction (prompts and dead letters) has already committed. At the buffer's cap
its overflow policy decides: an evicting buffer keeps the stream flowing and lets older
(or unsampled) prompts go, counted; a `pause` buffer makes the source wait until rounds
consume prompts.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack, closing, contextmanager
from typing import Any, Generic, Protocol, TypeVar

from taoflow.connectors.lifetime import exit_with
from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.sources.s3 import ObjectRef
from taoflow.daemon.ingest.ingestor import Ingestor, IngestReport, Prepared, RecordPreparer
from taoflow.daemon.ingest.metrics import IngestMetrics
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.cursors import ingested_objects, objects_ingested
from taoflow.daemon.store.storage import Database

__all__ = [
    "IngestProgress",
    "ObjectLoader",
    "ObjectReader",
    "ObjectSource",
    "Ref",
    "StreamSource",
    "ingest_objects",
    "run_stream",
]

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
    poll_timeout_s: float = 1.0,
    refresh_s: float = 5.0,
    metrics: IngestMetrics | None = None,
    on_healthy: Callable[[], None] | None = None,
    progress_every_s: float = 60.0,
) -> IngestReport:
    """Run until `stop` is set; return the totals. The source is committed and closed on the way out.

    The consumer lag (a broker round trip, which also tells that the broker answers: then
    `on_healthy` is called) is read every `refresh_s` and on stopping, not on every poll.
    """
    totals = IngestReport()
    progress = IngestProgress(source.name, every_s=progress_every_s)
    refreshed = float("-inf")
    try:
        while not stop.is_set():
            if time.monotonic() - refreshed >= refresh_s:
                refreshed = time.monotonic()
                lag = _report_lag(source, metrics)
                if on_healthy is not None:
                    on_healthy()
                progress.report(totals, f"lag {sum(lag.values())} records")
            if buffer.full():  # only a `pause` buffer is ever full: an evicting one makes room itself
                source.pause()
            else:
                source.resume()
            items = source.poll(timeout_s=poll_timeout_s)
            if items:
                _merge(totals, ingestor.run(items))
                source.commit()
            if metrics is not None:
                metrics.last_poll.labels(source.name).set(time.time())
        _report_lag(source, metrics)  # as it is when stopped
    finally:
        source.close()
    return totals


def _report_lag(source: StreamSource, metrics: IngestMetrics | None) -> dict[str, int]:
    lags = source.lag()
    if metrics is not None:
        for partition, lag in lags.items():
            metrics.consumer_lag.labels(source.name, partition).set(lag)
    return lags


class IngestProgress:
    """One log line per `every_s` with what a source read since the last line; quiet while nothing arrives."""

    def __init__(self, source: str, *, every_s: float) -> None:
        self._source = source
        self._every_s = every_s
        self._last = time.monotonic()
        self._seen = IngestReport()

    def report(self, totals: IngestReport, backlog: str) -> None:
        now = time.monotonic()
        if now - self._last < self._every_s:
            return
        read = totals.read - self._seen.read
        if read:
            log.info(
                "%s: read %d records in %.0f s (added %d, duplicates %d, evicted %d, skipped %d, dead-lettered %d); %s",
                self._source,
                read,
                now - self._last,
                totals.added - self._seen.added,
                totals.duplicates - self._seen.duplicates,
                totals.evicted - self._seen.evicted,
                (totals.skipped - self._seen.skipped).total(),
                (totals.dead_lettered - self._seen.dead_lettered).total(),
                backlog,
            )
        self._last = now
        self._seen = IngestReport(
            read=totals.read,
            added=totals.added,
            duplicates=totals.duplicates,
            evicted=totals.evicted,
            dead_lettered=totals.dead_lettered.copy(),
            skipped=totals.skipped.copy(),
        )


def _merge(totals: IngestReport, report: IngestReport) -> None:
    totals.read += report.read
    totals.added += report.added
    totals.duplicates += report.duplicates
    totals.evicted += report.evicted
    totals.dead_lettered.update(report.dead_lettered)
    totals.skipped.update(report.skipped)


class Ref(Protocol):
    """An object to read: its key and version (an S3 object's ETag; a Delta file's change) name it in checkpoints."""

    @property
    def key(self) -> str: ...

    @property
    def etag(self) -> str: ...


R = TypeVar("R", bound=Ref)


class ObjectReader(Protocol[R]):
    """Reads whole objects (S3 objects, Delta data files), each once."""

    name: str

    def fetch(self, ref: R) -> bytes | None: ...

    def records(self, ref: R, body: bytes) -> Iterator[SourceItem]: ...

    @property
    def factory(self) -> Callable[[], ObjectReader[R]]:
        """Builds an equal reader in a worker process; picklable."""
        ...

    @property
    def worker_modules(self) -> Sequence[str]:
        """Modules a worker process needs (imported once, before workers start)."""
        ...


class ObjectSource(ObjectReader[ObjectRef], Protocol):
    """A source of whole objects, each read once (S3)."""

    def pending(self, done: Collection[tuple[str, str]]) -> list[ObjectRef]: ...


def ingest_objects(
    source: ObjectSource,
    ingestor: Ingestor,
    buffer: PromptBuffer,
    db: Database,
    *,
    stop: threading.Event,
    follow: bool,
    poll_interval_s: float = 30.0,
    prefetch: int = 8,
    parse_processes: int = 0,
    metrics: IngestMetrics | None = None,
    on_healthy: Callable[[], None] | None = None,
    progress_every_s: float = 60.0,
) -> IngestReport:
    """Ingest every new object; its checkpoint (key + ETag) commits in the same transaction as its records.

    Up to `prefetch` objects are downloaded and parsed ahead (see ObjectLoader) while this thread stores them in
    listing order. A `pause` buffer at its cap leaves the rest pending (checked between transactions); an
    evicting buffer makes room itself.
    """
    totals = IngestReport()
    progress = IngestProgress(source.name, every_s=progress_every_s)
    with ObjectLoader(source, ingestor.preparer, prefetch=prefetch, processes=parse_processes) as loader:
        while not stop.is_set():
            pending = source.pending(ingested_objects(db, source.name))
            if on_healthy is not None:
                on_healthy()  # the bucket answered
            progress.report(totals, f"{len(pending)} objects pending")
            if metrics is not None:
                metrics.objects_pending.labels(source.name).set(len(pending))
                metrics.last_poll.labels(source.name).set(time.time())
            loader.store(pending, ingestor, buffer, totals, stop=stop, metrics=metrics)
            if not follow:
                break
            stop.wait(poll_interval_s)
    return totals


class ObjectLoader(Generic[R]):
    """Loads objects ahead of the thread that stores them: up to `prefetch` downloaded and parsed at once, in
    `processes` worker processes (each with its own client) or on threads here when 0. The store is the only
    step that touches the database; objects that are ready together are stored in one transaction."""

    def __init__(self, reader: ObjectReader[R], preparer: RecordPreparer, *, prefetch: int, processes: int) -> None:
        self._reader = reader
        self._preparer = preparer
        self._prefetch = prefetch
        self._processes = processes
        self._stack = ExitStack()
        self._threads: ThreadPoolExecutor | None = None
        self._workers: ProcessPoolExecutor | None = None
        self.bytes_read = 0

    def __enter__(self) -> ObjectLoader[R]:
        self._threads = self._stack.enter_context(
            ThreadPoolExecutor(max_workers=self._prefetch, thread_name_prefix="object-fetch")
        )
        self._workers = self._stack.enter_context(
            _loader_pool(self._processes, self._reader.factory, self._preparer, self._reader.worker_modules)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def load(self, ref: R) -> Prepared | None:
        if self._workers is None:
            return _load(self._reader, self._preparer, ref)
        return self._workers.submit(_load_in_worker, ref).result()

    def store(
        self,
        refs: Sequence[R],
        ingestor: Ingestor,
        buffer: PromptBuffer,
        totals: IngestReport,
        *,
        stop: threading.Event,
        metrics: IngestMetrics | None = None,
    ) -> bool:
        """Store `refs` in order, each with its checkpoint; True when all are stored (not stopped, not paused)."""
        assert self._threads is not None, "an ObjectLoader is used inside its `with`"
        if buffer.full():
            return False
        group: list[tuple[R, Prepared]] = []
        stored = 0
        with closing(_in_order(self._threads, self.load, refs, ahead=self._prefetch)) as loaded:
            for ref, prepared, next_ready in loaded:
                if prepared is not None:
                    group.append((ref, prepared))
                    self.bytes_read += prepared.bytes_read
                stored += 1
                if next_ready:
                    continue  # everything already loaded commits together: one fsync for several objects
                ingestor.store(
                    _joined(p for _, p in group),
                    totals,
                    also=objects_ingested(self._reader.name, [(r.key, r.etag) for r, _ in group]),
                )
                if metrics is not None:
                    metrics.objects_pending.labels(self._reader.name).dec(len(group))
                    metrics.bytes_read.labels(self._reader.name).inc(sum(p.bytes_read for _, p in group))
                group = []
                if stop.is_set() or buffer.full():
                    return False  # a `pause` buffer at its cap: the rest stays pending until rounds make room
        return stored == len(refs)


@contextmanager
def _loader_pool(
    processes: int, factory: Callable[[], ObjectReader[R]], preparer: RecordPreparer, preload: Sequence[str] = ()
) -> Iterator[ProcessPoolExecutor | None]:
    if processes <= 0:
        yield None
        return
    # Not fork: the daemon has threads (sources, scheduler, admin server) that a fork would copy mid-flight.
    # A fork server is one clean process that imports the loaders' modules once; workers fork from it.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, *preload])
    with ProcessPoolExecutor(
        max_workers=processes,
        mp_context=context,
        initializer=_init_loader,
        initargs=(factory, preparer, os.getpid()),
    ) as pool:
        yield pool


def _load(reader: ObjectReader[R], preparer: RecordPreparer, ref: R) -> Prepared | None:
    body = reader.fetch(ref)
    if body is None:
        return None  # replaced or deleted since listing: the next listing has its new version
    prepared = preparer.prepare(reader.records(ref, body))
    prepared.bytes_read = len(body)
    return prepared


_loader: tuple[ObjectReader[Any], RecordPreparer] | None = None


def _init_loader(factory: Callable[[], ObjectReader[Any]], preparer: RecordPreparer, owner: int) -> None:
    global _loader
    _loader = (factory(), preparer)
    exit_with(owner)


def _load_in_worker(ref: Ref) -> Prepared | None:
    assert _loader is not None, "the loader pool's initializer builds the worker's source"
    return _load(*_loader, ref)


def _in_order(
    threads: ThreadPoolExecutor, load: Callable[[R], Prepared | None], refs: Sequence[R], *, ahead: int
) -> Generator[tuple[R, Prepared | None, bool], None, None]:
    """Each object loaded, in listing order, with up to `ahead` loading meanwhile; the flag says the
    next one is already loaded. Loads not yet started are cancelled when the caller stops early."""
    loads = deque(threads.submit(load, ref) for ref in refs[:ahead])
    try:
        for index, ref in enumerate(refs):
            prepared = loads.popleft().result()
            if index + ahead < len(refs):
                loads.append(threads.submit(load, refs[index + ahead]))
            yield ref, prepared, bool(loads) and loads[0].done()
    finally:
        for future in loads:
            future.cancel()


def _joined(parts: Iterable[Prepared]) -> Prepared:
    joined = Prepared()
    for part in parts:
        joined.read += part.read
        joined.bytes_read += part.bytes_read
        joined.rows += part.rows
        joined.dead += part.dead
        joined.skipped.update(part.skipped)
    return joined

"""What the gateway captures of an exchange, where it waits (the spool) and the thread that moves it to the sink.

A record has the Databricks inference-table shape that taoflow's sources parse (connectors/sources/
formats.py): `databricks_request_id`, `timestamp_ms`, `status_code`, `execution_time_ms`, the
request as the client sent it, the response (a streamed one assembled into a completion object),
`request_metadata` (model, served version, replica, gateway) and the task.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from taoflow.connectors.errors import ConfigurationError, TemporaryError
from taoflow.connectors.serving.upstream import UpstreamAnswer
from taoflow.connectors.sinks.base import CaptureSink
from taoflow.connectors.sources.redaction import Redactor
from taoflow.daemon.gateway.captured import Backlog, RecordBuilder, RecordFacts
from taoflow.daemon.gateway.exchange import Exchange
from taoflow.daemon.gateway.metrics import GatewayMetrics
from taoflow.daemon.gateway.routing import Choice
from taoflow.daemon.settings import Settings, sample_key
from taoflow.daemon.store.spool import Spool, SpoolDepth
from taoflow.policies.ingest_filter import sampled_in

__all__ = ["Capture", "Drainer", "build_sink", "wanted"]

log = logging.getLogger(__name__)


def wanted(request_id: str, task: str, *, rate: float, task_rates: Mapping[str, float], key: bytes = b"") -> bool:
    """Whether to capture this exchange: by request-id hash (keyed with ingest.sample_key), so every gateway
    replica and the daemon's ingest agree."""
    return sampled_in(request_id, rate, key=key) and sampled_in(request_id, task_rates.get(task, 1.0), key=key)


class Drainer:
    """Moves spooled records to the sink in batches, oldest first; a failing sink is retried with back-off,
    its records kept."""

    def __init__(
        self,
        spool: Spool,
        sink: CaptureSink,
        *,
        batch_records: int,
        flush_s: float,
        on_sent: Callable[[int], None] = lambda n: None,
        on_sink: Callable[[bool], None] = lambda up: None,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.spool = spool
        self.sink = sink
        self.batch_records = batch_records
        self.flush_s = flush_s
        self._on_sent = on_sent
        self._on_sink = on_sink
        self._max_backoff_s = max_backoff_s
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="capture-drainer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                sent = self.drain_once()
            except TemporaryError as exc:
                self._on_sink(False)
                log.warning("capture sink %s: %s (retry in %.1f s)", self.sink.name, exc, backoff)
                self.stop.wait(backoff)
                backoff = min(self._max_backoff_s, backoff * 2)
                continue
            except Exception:
                self._on_sink(False)
                log.exception("capture sink %s failed (retry in %.1f s)", self.sink.name, backoff)
                self.stop.wait(backoff)
                backoff = min(self._max_backoff_s, backoff * 2)
                continue
            backoff = 0.5
            if sent < self.batch_records:
                self.stop.wait(self.flush_s if sent == 0 else min(self.flush_s, 0.05))

    def drain_once(self) -> int:
        batch = self.spool.batch(self.batch_records)
        if not batch:
            return 0
        self.sink.send(batch)
        self._on_sink(True)
        self.spool.remove(batch)
        self._on_sent(len(batch))
        return len(batch)

    def finish(self, deadline_s: float) -> SpoolDepth:
        """Stop the loop; send what is spooled until `deadline_s` passes (shutdown); what is left stays spooled."""
        self.stop.set()
        self._thread.join(timeout=deadline_s)
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            try:
                if self.drain_once() == 0:
                    break
            except Exception as exc:
                log.warning("capture sink %s at shutdown: %s (records stay spooled)", self.sink.name, exc)
                break
        return self.spool.depth()


class Capture:
    """What the gateway keeps of each exchange: sampled by request id, the answer assembled, redacted, spooled on
    disk and drained to the sink in the background."""

    def __init__(self, settings: Settings, sink: CaptureSink, *, gateway: str, metrics: GatewayMetrics) -> None:
        c = settings.gateway.capture
        self.settings = c
        self.task_rates = settings.ingest.sample_rates
        self.sample_key = sample_key(settings)
        self.gateway = gateway
        self.metrics = metrics
        self.keep_status = frozenset(settings.ingest.keep_status)
        self.builder = RecordBuilder(tuple(Redactor(settings.ingest.redact).kinds))
        self._pending: set[asyncio.Future[None]] = set()  # records still being built (a spool that is not durable)
        self.max_record_bytes = c.max_record_bytes
        self.sink = sink
        self.spool = Spool(c.spool_dir / "spool.db", max_bytes=c.spool_max_bytes, durable=c.durable)
        self.drainer = Drainer(
            self.spool,
            sink,
            batch_records=c.batch_records,
            flush_s=c.flush_seconds,
            on_sent=metrics.sent.inc,
            on_sink=lambda up: metrics.sink_up.set(1 if up else 0),
        )

    def wants(self, exchange: Exchange) -> bool:
        return wanted(
            exchange.request_id,
            exchange.task,
            rate=self.settings.sample_rate,
            task_rates=self.task_rates,
            key=self.sample_key,
        )

    async def record(
        self, exchange: Exchange, choice: Choice, upstream: UpstreamAnswer, kept: bytes, *, too_large: bool
    ) -> None:
        """Build the exchange's record off the event loop and spool it (a durable spool answers once it is on disk,
        or after 10 s; otherwise this returns at once and the record follows)."""
        if too_large:
            self.metrics.dropped.labels("too_large").inc()
            return
        if self.keep_status and upstream.status not in self.keep_status:
            return  # ingest would skip it: a refused or failed request is not worth a byte of the spool
        facts = RecordFacts(
            request_id=exchange.request_id,
            task=exchange.task,
            endpoint=exchange.endpoint,
            status=upstream.status,
            started=exchange.wall,
            latency_s=time.monotonic() - exchange.started,
            model=exchange.model,
            version=choice.name,
            replica=choice.url,
            gateway=self.gateway,
        )
        streamed = upstream.headers.get("content-type", "").startswith("text/event-stream")
        work = self._spool_one(facts, exchange.payload, kept, size=len(exchange.body) + len(kept), streamed=streamed)
        if not self.settings.durable:
            task = asyncio.ensure_future(work)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        await work

    async def _spool_one(
        self, facts: RecordFacts, request: dict[str, Any], kept: bytes, *, size: int, streamed: bool
    ) -> None:
        try:
            record = await self.builder.build(facts, request, kept, size=size, streamed=streamed)
        except Backlog:
            self.metrics.dropped.labels("backlog").inc()
            return
        except Exception:  # a bug of ours, or the redaction process died: this record is lost, not the gateway
            log.exception("gateway: building the capture record of %s failed", facts.request_id)
            self.metrics.dropped.labels("error").inc()
            return
        if record is None:
            self.metrics.dropped.labels("unparseable").inc()
            return
        done = self.spool.put(facts.request_id, record, facts.started)
        try:
            self._spooled(await asyncio.wait_for(asyncio.wrap_future(done), timeout=10.0))
        except TimeoutError:
            log.warning(
                "gateway: the capture spool took over 10 s for %s: answered before it was on disk", facts.request_id
            )
            done.add_done_callback(lambda f: self._spooled(f.result()))

    def _spooled(self, accepted: bool) -> None:
        if accepted:
            self.metrics.captured.inc()
        else:
            self.metrics.dropped.labels("spool_full").inc()

    def start(self) -> None:
        self.drainer.start()

    async def finish(self, deadline_s: float = 10.0) -> None:
        """Send what is spooled (bounded), then close the spool and the sink; what is left waits for the next start."""
        if self._pending:
            await asyncio.wait(self._pending, timeout=deadline_s)
        self.builder.close()
        left = await asyncio.to_thread(self.drainer.finish, deadline_s)
        if left.records:
            log.warning(
                "gateway %s: %d captured exchange(s) stay spooled for the next start", self.gateway, left.records
            )
        self.spool.close()
        self.sink.close()


def build_sink(settings: Settings, gateway: str) -> CaptureSink | None:
    c = settings.gateway.capture
    if c.sink == "none":
        return None
    if c.sink == "jsonl":
        from taoflow.connectors.sinks.jsonl import JsonlSink

        return JsonlSink(c.jsonl_dir, gateway=gateway)
    if c.sink == "s3":
        from taoflow.connectors.sinks.s3 import S3Sink

        s3 = settings.source.s3
        if not s3.bucket:
            raise ConfigurationError("gateway.capture.sink: s3 writes to source.s3.bucket/prefix: set source.s3.bucket")
        return S3Sink(s3.bucket, s3.prefix, gateway=gateway, endpoint_url=s3.endpoint_url, region=s3.region)
    from taoflow.connectors.sinks.kafka import KafkaSink
    from taoflow.daemon.ingest.configured import kafka_client_options

    k = settings.source.kafka
    topic = c.topic or (k.topics[0] if k.topics else None)
    if not topic:
        raise ConfigurationError("gateway.capture.sink: kafka needs gateway.capture.topic or source.kafka.topics")
    return KafkaSink(k.bootstrap_servers, topic, client_options=kafka_client_options(settings))

"""Run the configured streaming source until stopped: Kafka consumed, or S3 polled for new objects."""

from __future__ import annotations

import logging
import os
import threading

from taoflow.connectors.errors import ConfigurationError
from taoflow.daemon import wiring
from taoflow.daemon.ingest import IngestReport
from taoflow.daemon.metrics import IngestMetrics
from taoflow.daemon.settings import Settings
from taoflow.daemon.wiring import State

__all__ = ["follow_kafka", "ingest_s3", "run_source"]

log = logging.getLogger(__name__)


def run_source(
    settings: Settings, state: State, *, stop: threading.Event, metrics: IngestMetrics | None = None
) -> IngestReport:
    """The daemon's source task: the configured streaming source, until `stop`."""
    if settings.source.kind == "kafka":
        return follow_kafka(settings, state, stop=stop, metrics=metrics)
    if settings.source.kind == "s3":
        return ingest_s3(settings, state, stop=stop, follow=True, metrics=metrics)
    raise ConfigurationError("source.kind jsonl is read once by `taoflow ingest`; the daemon follows kafka or s3")


def ingest_s3(
    settings: Settings, state: State, *, stop: threading.Event, follow: bool, metrics: IngestMetrics | None = None
) -> IngestReport:
    from taoflow.daemon.streaming import ingest_objects

    source = wiring.build_object_source(settings)
    s3 = settings.source.s3
    ingestor = wiring.build_ingestor(settings, state, source.name, field_map=s3.field_map, metrics=metrics)
    log.info("ingesting s3://%s/%s%s", s3.bucket, s3.prefix, " until stopped" if follow else "")
    return ingest_objects(
        source,
        ingestor,
        state.buffer,
        state.db,
        stop=stop,
        buffer_cap=settings.ingest.buffer_cap,
        follow=follow,
        poll_interval_s=s3.poll_interval_seconds,
        prefetch=s3.prefetch,
        parse_processes=len(os.sched_getaffinity(0)) if s3.parse_processes is None else s3.parse_processes,
        metrics=metrics,
    )


def follow_kafka(
    settings: Settings, state: State, *, stop: threading.Event, metrics: IngestMetrics | None = None
) -> IngestReport:
    """Consume until `stop`, committing offsets after every stored batch."""
    from taoflow.daemon.streaming import run_stream

    source = wiring.build_stream_source(settings)
    kafka = settings.source.kafka
    ingestor = wiring.build_ingestor(settings, state, source.name, field_map=kafka.field_map, metrics=metrics)
    log.info("consuming %s until stopped", source.name)
    return run_stream(
        source,
        ingestor,
        state.buffer,
        stop=stop,
        buffer_cap=settings.ingest.buffer_cap,
        poll_timeout_s=kafka.poll_timeout_seconds,
        metrics=metrics,
    )

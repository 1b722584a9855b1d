"""The configured source, built from the settings and run: JSONL files read once, Kafka consumed, S3 polled, or
a Delta table followed."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.protocols import Source
from taoflow.connectors.sources.delta import DeltaConfig, DeltaSource
from taoflow.connectors.sources.jsonl import JsonlSource
from taoflow.connectors.sources.redaction import Redactor
from taoflow.daemon.ingest.ingestor import Ingestor, IngestReport
from taoflow.daemon.ingest.metrics import IngestMetrics
from taoflow.daemon.ingest.streaming import ObjectSource, StreamSource, ingest_objects, run_stream
from taoflow.daemon.settings import Settings, known_tasks, sample_key
from taoflow.daemon.store.state import State
from taoflow.policies.ingest_filter import IngestFilter

__all__ = [
    "build_delta_source",
    "build_ingestor",
    "build_object_source",
    "build_source",
    "build_stream_source",
    "follow_kafka",
    "ingest_delta_table",
    "ingest_s3",
    "run_source",
]

log = logging.getLogger(__name__)


def run_source(
    settings: Settings,
    state: State,
    *,
    stop: threading.Event,
    metrics: IngestMetrics | None = None,
    on_healthy: Callable[[], None] | None = None,
) -> IngestReport:
    """The daemon's source task: the configured streaming source, until `stop`. `on_healthy` is called
    whenever the broker or bucket has just answered."""
    if settings.source.kind == "kafka":
        return follow_kafka(settings, state, stop=stop, metrics=metrics, on_healthy=on_healthy)
    if settings.source.kind == "s3":
        return ingest_s3(settings, state, stop=stop, follow=True, metrics=metrics, on_healthy=on_healthy)
    if settings.source.kind == "delta":
        return ingest_delta_table(settings, state, stop=stop, follow=True, metrics=metrics, on_healthy=on_healthy)
    raise ConfigurationError(
        "source.kind jsonl is read once by `taoflow ingest`; the daemon follows kafka, s3 or delta"
    )


def ingest_s3(
    settings: Settings,
    state: State,
    *,
    stop: threading.Event,
    follow: bool,
    metrics: IngestMetrics | None = None,
    on_healthy: Callable[[], None] | None = None,
) -> IngestReport:
    source = build_object_source(settings)
    s3 = settings.source.s3
    ingestor = build_ingestor(settings, state, source.name, field_map=s3.field_map, metrics=metrics)
    log.info("ingesting s3://%s/%s%s", s3.bucket, s3.prefix, " until stopped" if follow else "")
    return ingest_objects(
        source,
        ingestor,
        state.buffer,
        state.db,
        stop=stop,
        follow=follow,
        poll_interval_s=s3.poll_interval_seconds,
        prefetch=s3.prefetch,
        parse_processes=len(os.sched_getaffinity(0)) if s3.parse_processes is None else s3.parse_processes,
        metrics=metrics,
        on_healthy=on_healthy,
    )


def ingest_delta_table(
    settings: Settings,
    state: State,
    *,
    stop: threading.Event,
    follow: bool,
    metrics: IngestMetrics | None = None,
    on_healthy: Callable[[], None] | None = None,
) -> IngestReport:
    from taoflow.daemon.ingest.table_follower import ingest_delta

    source = build_delta_source(settings)
    d = settings.source.delta
    ingestor = build_ingestor(settings, state, source.name, field_map=d.field_map, metrics=metrics)
    log.info("ingesting the Delta table %s%s", source.uri, " until stopped" if follow else "")
    return ingest_delta(
        source,
        ingestor,
        state.buffer,
        state.db,
        stop=stop,
        follow=follow,
        poll_interval_s=d.poll_interval_seconds,
        prefetch=d.prefetch,
        parse_processes=len(os.sched_getaffinity(0)) if d.parse_processes is None else d.parse_processes,
        max_versions=d.max_versions_per_poll,
        metrics=metrics,
        on_healthy=on_healthy,
        rounds_dir=state.rounds_dir,
    )


def build_delta_source(settings: Settings) -> DeltaSource:
    """The Delta table source; deltalake is imported when it reads."""
    d = settings.source.delta
    if not d.table_uri:
        raise ConfigurationError("source.kind is delta but source.delta.table_uri is empty")
    options = tuple(sorted((k, v.get_secret_value()) for k, v in d.storage_options.items()))
    return DeltaSource(
        DeltaConfig(
            table_uri=d.table_uri,
            endpoint_url=d.endpoint_url,
            region=d.region,
            storage_options=options,
            start_version=d.start_version,
            start_timestamp=d.start_timestamp,
        )
    )


def follow_kafka(
    settings: Settings,
    state: State,
    *,
    stop: threading.Event,
    metrics: IngestMetrics | None = None,
    on_healthy: Callable[[], None] | None = None,
) -> IngestReport:
    """Consume until `stop`, committing offsets after every stored batch."""
    source = build_stream_source(settings)
    kafka = settings.source.kafka
    ingestor = build_ingestor(settings, state, source.name, field_map=kafka.field_map, metrics=metrics)
    log.info("consuming %s until stopped", source.name)
    return run_stream(
        source,
        ingestor,
        state.buffer,
        stop=stop,
        poll_timeout_s=kafka.poll_timeout_seconds,
        metrics=metrics,
        on_healthy=on_healthy,
    )


def build_stream_source(settings: Settings) -> StreamSource:
    """The streaming source (Kafka); imports its client only when one is configured."""
    from taoflow.connectors.sources.kafka import KafkaConfig, KafkaSource

    k = settings.source.kafka
    config = KafkaConfig(
        bootstrap_servers=k.bootstrap_servers,
        group_id=k.group_id,
        topics=k.topics,
        topic_pattern=k.topic_pattern,
        max_poll_records=k.max_poll_records,
        session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=k.heartbeat_interval_ms,
        max_poll_interval_ms=k.max_poll_interval_ms,
        bootstrap_timeout_ms=k.bootstrap_timeout_ms,
        client_options=kafka_client_options(settings),
    )
    return KafkaSource(config)


def kafka_client_options(settings: Settings) -> dict[str, object]:
    """source.kafka's security settings as kafka-python client options (the consumer's and the gateway's producer)."""
    k = settings.source.kafka
    options: dict[str, object] = {"security_protocol": k.security_protocol}
    optional = {
        "sasl_mechanism": k.sasl_mechanism,
        "sasl_plain_username": k.sasl_username,
        "sasl_plain_password": k.sasl_password.get_secret_value() if k.sasl_password else None,
        "ssl_cafile": str(k.ssl_cafile) if k.ssl_cafile else None,
        "ssl_certfile": str(k.ssl_certfile) if k.ssl_certfile else None,
        "ssl_keyfile": str(k.ssl_keyfile) if k.ssl_keyfile else None,
    }
    options.update({key: value for key, value in optional.items() if value is not None})
    return options


def build_object_source(settings: Settings) -> ObjectSource:
    """The S3 inference-table source; imports boto3 only when one is configured."""
    from taoflow.connectors.sources.s3 import S3Config, S3Source

    s3 = settings.source.s3
    if not s3.bucket:
        raise ConfigurationError("source.kind is s3 but source.s3.bucket is empty")
    return S3Source(
        S3Config(bucket=s3.bucket, prefix=s3.prefix, endpoint_url=s3.endpoint_url, region=s3.region, order=s3.order)
    )


def build_source(settings: Settings) -> Source:
    if settings.source.kind != "jsonl":
        raise ConfigurationError(f"source.kind {settings.source.kind!r} is a streaming source: use `ingest --follow`")
    if not settings.source.paths:
        raise ConfigurationError("source.paths is empty: name JSONL files or directories to ingest")
    return JsonlSource(settings.source.paths)


def build_ingestor(
    settings: Settings,
    state: State,
    source_name: str,
    *,
    field_map: dict[str, str] | None = None,
    metrics: IngestMetrics | None = None,
) -> Ingestor:
    i = settings.ingest
    return Ingestor(
        state.buffer,
        source=source_name,
        default_task=i.default_task,
        redactor=Redactor(i.redact),
        rules=IngestFilter(
            keep_status=frozenset(i.keep_status),
            sample_rates=dict(i.sample_rates),
            max_prompt_chars=i.max_prompt_chars,
            task_map=dict(i.task_map),
            known_tasks=known_tasks(settings),
            default_task=i.default_task,
            unknown=i.unknown_task,
            sample_key=sample_key(settings),
            tools=settings.model.tool_call_parser != "none",
        ),
        field_map=field_map,
        metrics=metrics,
    )

"""What the sources and the ingest step report to Prometheus.

Registered on an injected registry; names and labels follow the rules in service/metrics.py.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["IngestMetrics"]


class IngestMetrics:
    """What the sources and the ingest step report."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ingested = Counter(
            "taoflow_records_ingested_total", "Log records newly stored in the buffer.", ["source"], registry=registry
        )
        self.duplicates = Counter(
            "taoflow_records_duplicate_total",
            "Log records already in the buffer (same request id, prompt or origin).",
            ["source"],
            registry=registry,
        )
        self.skipped = Counter(
            "taoflow_records_skipped_total",
            "Log records dropped on purpose by an ingest filter.",
            ["source", "reason"],
            registry=registry,
        )
        self.relabelled = Counter(
            "taoflow_ingest_relabelled_total",
            "Records of a task taoflow does not know (ingest.tasks), buffered under ingest.default_task.",
            ["source"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "taoflow_records_dead_lettered_total",
            "Log records that could not be parsed, kept in the dead-letter table.",
            ["source", "reason"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "taoflow_source_consumer_lag_records",
            "Records between a partition's committed offset and its end (Kafka sources).",
            ["source", "partition"],
            registry=registry,
        )
        self.objects_pending = Gauge(
            "taoflow_source_objects_pending",
            "Objects listed but not yet fully ingested (S3 sources).",
            ["source"],
            registry=registry,
        )
        self.last_poll = Gauge(
            "taoflow_source_last_poll_timestamp_seconds",
            "Unix time of the source's last successful poll.",
            ["source"],
            registry=registry,
        )
        self.bytes_read = Counter(
            "taoflow_source_read_bytes_total",
            "Bytes of objects and data files downloaded by a source (S3 and Delta sources).",
            ["source"],
            registry=registry,
        )
        self.table_version = Gauge(
            "taoflow_source_table_version",
            "The last table version a Delta source has fully ingested.",
            ["source"],
            registry=registry,
        )
        self.erased = Counter(
            "taoflow_source_erasures_total",
            "What a source's deletes erased: untrained prompts (deleted), prompts a round had trained on "
            "(tombstoned), dead letters (dead_letter), requests not held, kept out (blocked).",
            ["source", "kind"],
            registry=registry,
        )

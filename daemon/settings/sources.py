"""Where prompts come from: JSON lines files, a Kafka consumer group, S3 objects or a Delta table."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from taoflow.daemon.settings.base import ObjectStoreEndpoint, Section

__all__ = ["DeltaSettings", "KafkaSettings", "S3Settings", "SourceSettings"]


class KafkaSettings(Section):
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["localhost:9092"])
    """Kafka (or Redpanda, MSK, Confluent) bootstrap servers, host:port."""
    topics: list[str] = Field(default_factory=list)
    """Topics to consume (or use topic_pattern)."""
    topic_pattern: str | None = None
    """Regular expression of topics to consume, instead of a fixed list."""
    group_id: str = "taoflow"
    """Consumer group; committed offsets belong to it."""
    field_map: dict[str, str] = Field(default_factory=dict)
    """Dotted paths for other record shapes: request_id, task, messages, prompt, response, timestamp, status_code."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Passed to the client unchanged."""
    sasl_mechanism: str | None = None
    """e.g. PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (with a SASL security_protocol)."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password; set it through TAOFLOW_SOURCE__KAFKA__SASL_PASSWORD from a secret, never in a file."""
    ssl_cafile: Path | None = None
    """CA bundle for SSL."""
    ssl_certfile: Path | None = None
    """Client certificate for mutual TLS."""
    ssl_keyfile: Path | None = None
    """Client key for mutual TLS."""
    max_poll_records: int = Field(500, ge=1)
    """Records per poll; each poll is written to the buffer in one transaction, then committed."""
    poll_timeout_seconds: float = Field(1.0, gt=0)
    """How long one poll waits for records."""
    session_timeout_ms: int = Field(10_000, ge=1000)
    """Group session timeout."""
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    """Group heartbeat interval."""
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    """Longest gap between polls before the group evicts this member (also the JoinGroup timeout)."""
    bootstrap_timeout_ms: int = Field(10_000, ge=100)
    """How long connecting to the brokers may take before the attempt counts as an outage (retried with backoff)."""


class S3Settings(ObjectStoreEndpoint):
    """s3: objects under a prefix (endpoint_url and region as for every object store)."""

    bucket: str = ""
    """Bucket holding the inference table's files."""
    prefix: str = ""
    """Key prefix to watch, e.g. the table's directory."""
    order: Literal["key", "last_modified"] = "key"
    """Order in which new objects are ingested."""
    poll_interval_seconds: float = Field(30.0, gt=0)
    """Pause between listings of the prefix when following."""
    field_map: dict[str, str] = Field(default_factory=dict)
    """Dotted paths for other record shapes, as for Kafka."""
    prefetch: int = Field(4, ge=1)
    """Objects downloaded and parsed ahead of the one being stored."""
    parse_processes: int | None = Field(None, ge=0)
    """Worker processes parsing downloaded objects; 0 parses on the download threads; unset: one per usable CPU."""


class DeltaSettings(ObjectStoreEndpoint):
    """delta: a table read through its log (endpoint_url and region as for every object store)."""

    table_uri: str = ""
    """The Delta table (a Databricks inference table): `s3://bucket/path`, a local directory, or a Unity Catalog
    name `uc://catalog.schema.table` (with its workspace URL and token in storage_options)."""
    storage_options: dict[str, SecretStr] = Field(default_factory=dict)
    """More options for deltalake's storage (e.g. DATABRICKS_WORKSPACE_URL, DATABRICKS_ACCESS_TOKEN), kept
    secret: set them through TAOFLOW_SOURCE__DELTA__STORAGE_OPTIONS__<NAME> from a secret, never in a file."""
    start_version: int | None = Field(None, ge=0)
    """First start: read the table's versions from this one on, instead of the current snapshot."""
    start_timestamp: str | None = None
    """First start: read the versions committed at or after this ISO 8601 time, instead of the snapshot."""
    poll_interval_seconds: float = Field(30.0, gt=0)
    """Pause between reads of the table's log when caught up."""
    max_versions_per_poll: int = Field(100, ge=1)
    """Most versions one poll reads (a long backlog is read in steps, each checkpointed)."""
    field_map: dict[str, str] = Field(default_factory=dict)
    """Dotted paths for other row shapes, as for Kafka (column names are the first part)."""
    prefetch: int = Field(4, ge=1)
    """Data files downloaded and parsed ahead of the one being stored."""
    parse_processes: int | None = Field(None, ge=0)
    """Worker processes parsing data files; 0 parses on the download threads; unset: one per usable CPU."""


class SourceSettings(Section):
    kind: Literal["jsonl", "kafka", "s3", "delta"] = "jsonl"
    """Where prompts come from: `jsonl` files, a `kafka` consumer group, `s3` objects, or a `delta` table (a
    Databricks inference table, read through its log: versions, compaction and deletes as the table says)."""
    paths: list[Path] = Field(default_factory=list)
    """jsonl: files or directories (every *.jsonl and *.jsonl.gz inside) to ingest; relative to the config file."""
    kafka: KafkaSettings = KafkaSettings()
    """kafka: the consumer group."""
    s3: S3Settings = S3Settings()
    """s3: the bucket and prefix."""
    delta: DeltaSettings = DeltaSettings()
    """delta: the table."""

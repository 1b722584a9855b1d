"""`taoflow gateway`: the OpenAI-compatible proxy in front of the fleet, and what it captures."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from taoflow.daemon.settings.base import Section, TokenSource

__all__ = ["CaptureSettings", "GatewaySettings"]


class CaptureSettings(Section):
    """What `taoflow gateway` writes of each exchange, and where (the shapes taoflow's sources read)."""

    sink: Literal["none", "kafka", "s3", "jsonl"] = "none"
    """`kafka`: the topic below on source.kafka's cluster (acks=all, idempotent where the broker allows); `s3`:
    batched gzipped JSON-lines objects under source.s3's bucket and prefix; `jsonl`: files in jsonl_dir."""
    topic: str | None = None
    """kafka: the topic records go to (default: the first of source.kafka.topics)."""
    jsonl_dir: Path = Path("capture")
    """jsonl: directory of daily files (capture-YYYYMMDD.jsonl); source.paths can name it."""
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    """Share of exchanges captured (by request-id hash); ingest.sample_rates applies per task on top."""
    spool_dir: Path = Path("gateway-spool")
    """Where records wait for the sink (SQLite); on a volume that outlives the process."""
    spool_max_bytes: int = Field(1 << 30, ge=1 << 16)
    """Spool size past which new records are dropped (counted in taoflow_gateway_capture_dropped_total)."""
    durable: bool = True
    """Answer the last byte of a response only after its record is on disk (one group-committed fsync), so a
    crash loses no answered exchange; false: records are spooled after the answer."""
    batch_records: int = Field(500, ge=1)
    """Records per sink write (one S3 object holds at most this many)."""
    flush_seconds: float = Field(1.0, gt=0)
    """Longest a record waits in the spool before a smaller batch is written."""
    max_record_bytes: int = Field(1 << 20, ge=1024)
    """Exchanges larger than this (request and response) are not captured (counted as too_large)."""
    token_ids: bool = False
    """Ask the replica for the prompt's and the answer's token ids on chat and completions requests (vLLM's
    `return_token_ids`) and keep them, with the answer's logprobs where the client asked for them, in the record's
    `metadata.replay`, so the exchange can be replayed token for token. Clients see the extra fields."""


class GatewaySettings(Section):
    """`taoflow gateway`: the OpenAI-compatible proxy in front of the fleet; routes the stable name to versions."""

    host: str = "127.0.0.1"
    """Address it listens on (0.0.0.0 in a pod)."""
    port: int = Field(8080, ge=0, le=65535)
    """Port of the proxy (also /healthz, /readyz, /metrics)."""
    id: str | None = None
    """This gateway's name in reports to the daemon (default: the host name)."""
    daemon_url: str | None = None
    """The daemon's admin API, for the route table (default: daemon.admin_url); reached with daemon.gateway_token."""
    routes_poll_seconds: float = Field(1.0, gt=0)
    """How often the route table is read (and in-flight requests reported)."""
    replicas_poll_seconds: float = Field(2.0, gt=0)
    """How often each replica's served names (GET /v1/models) are read; a failing one is taken out."""
    connect_timeout_seconds: float = Field(2.0, gt=0)
    """Connecting to a replica; a refused or timed-out connection is retried on another replica."""
    request_timeout_seconds: float = Field(600.0, gt=0)
    """Longest one request may take, streaming included (504 before the first byte; cut after it)."""
    retries: int = Field(2, ge=0)
    """Further replicas tried when one refuses the connection or no longer serves the name (before any byte)."""
    max_body_bytes: int = Field(4 << 20, ge=1024)
    """Largest request body accepted (413 past it)."""
    max_connections: int = Field(1024, ge=1)
    """Connections to the replicas, in all."""
    client_timeout_seconds: float = Field(30.0, gt=0)
    """Longest a client may take to send a request's headers (the connection is closed past it), and again its body
    (408): a client that trickles bytes holds a connection this long at most."""
    max_client_connections: int = Field(4096, ge=1)
    """Client connections and requests at once; past it, new ones are answered 503 at once."""
    api_keys: TokenSource = TokenSource()
    """Keys clients present (`Authorization: Bearer …`): one per line in the file (a mounted Secret), or several in
    the value separated by commas. With keys, every route but /healthz and /readyz needs one (401 without, 403 for a
    wrong one, answered before a byte of the body is read), a client's x-taoflow-task is honoured, and the client's
    key is not passed on to the replicas (fleet.api_key is)."""
    allow_anonymous: bool = False
    """Serve clients without keys while listening beyond loopback; without api_keys (and without this) the gateway
    starts only on 127.0.0.1, ::1 or localhost."""
    capture: CaptureSettings = CaptureSettings()
    """Traffic capture into the flywheel."""

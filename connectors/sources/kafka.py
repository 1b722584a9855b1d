"""A Kafka consumer-group source with at-least-once delivery into the buffer.

Auto-commit is off. `poll` hands out records and remembers, per partition, the offset
after the last one; the caller writes them durably and only then calls `commit`, which
commits exactly those offsets (committed offset = last processed + 1). Records polled
but not committed are delivered again after a crash or a rebalance; the buffer's
dedup by request id and normalised prompt makes that harmless.

A broker that does not answer (at start, or later: every client error of poll, commit and
the lag read) is a `TemporaryError`: the caller closes this source and builds a new one later.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from taoflow.connectors.errors import ConfigurationError, TemporaryError
from taoflow.connectors.protocols import SourceItem

__all__ = ["KafkaConfig", "KafkaSource"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: Sequence[str]
    group_id: str
    topics: Sequence[str] = ()
    topic_pattern: str | None = None
    max_poll_records: int = 500
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    bootstrap_timeout_ms: int = 10_000
    lag_timeout_ms: int = 5_000
    # Passed to the client unchanged: security_protocol, sasl_mechanism, sasl_plain_username,
    # sasl_plain_password, ssl_cafile, ssl_certfile, ssl_keyfile, ...
    client_options: Mapping[str, Any] = field(default_factory=dict)


class KafkaSource:
    """Consumes JSON log records from topics (or a pattern) as one member of a consumer group."""

    def __init__(self, config: KafkaConfig, *, name: str = "kafka") -> None:
        if not config.topics and not config.topic_pattern:
            raise ConfigurationError("the kafka source needs source.kafka.topics or source.kafka.topic_pattern")
        self.name = name
        self._pending: dict[Any, int] = {}
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=list(config.bootstrap_servers),
                group_id=config.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=config.max_poll_records,
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
                max_poll_interval_ms=config.max_poll_interval_ms,
                bootstrap_timeout_ms=config.bootstrap_timeout_ms,
                **dict(config.client_options),
            )
        except KafkaError as exc:
            raise TemporaryError(f"cannot reach Kafka at {list(config.bootstrap_servers)}: {exc}", delay=5.0) from None
        self._where = f"Kafka at {list(config.bootstrap_servers)}"
        self._lag_timeout_ms = config.lag_timeout_ms
        listener = _Revocations(self._pending)
        if config.topic_pattern:
            self._consumer.subscribe(pattern=config.topic_pattern, listener=listener)
        else:
            self._consumer.subscribe(topics=list(config.topics), listener=listener)
            self._warn_missing(config)

    def _warn_missing(self, config: KafkaConfig) -> None:
        """A misspelt topic waits silently for messages that never come: say so once, at start. Asked
        through a short-lived admin client with a timeout (the consumer's own topic listing can wait forever)."""
        from kafka.admin import KafkaAdminClient

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=list(config.bootstrap_servers),
                request_timeout_ms=config.lag_timeout_ms,
                bootstrap_timeout_ms=config.lag_timeout_ms,
                **dict(config.client_options),
            )
            try:
                existing = set(admin.list_topics())
            finally:
                admin.close()
        except KafkaError as exc:
            log.debug("could not list Kafka topics to check the configured ones: %s", exc)
            return
        missing = sorted(set(config.topics) - existing)
        if missing:
            log.warning(
                "Kafka topic(s) %s do not exist: nothing is consumed from them until they are created "
                "(existing topics: %s)",
                ", ".join(missing),
                ", ".join(sorted(existing)[:20]) or "none",
            )

    def poll(self, *, timeout_s: float = 1.0) -> list[SourceItem]:
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        except KafkaError as exc:
            raise TemporaryError(f"polling {self._where} failed: {exc}") from None
        items: list[SourceItem] = []
        for tp, messages in batches.items():
            for message in messages:
                payload = message.value if message.value is not None else b""
                items.append(SourceItem(payload=payload, origin=f"kafka:{tp.topic}/{tp.partition}/{message.offset}"))
                self._pending[tp] = message.offset + 1
        return items

    def commit(self) -> None:
        """Commit the offsets after everything polled so far; call only once it is durably stored."""
        if not self._pending:
            return
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._pending.items()}
        try:
            self._consumer.commit(offsets=offsets)
        except KafkaError as exc:  # stored, not acknowledged: redelivered later, and the buffer's dedup absorbs it
            raise TemporaryError(f"committing offsets to {self._where} failed: {exc}") from None
        self._pending.clear()

    def pause(self) -> None:
        assigned = self._consumer.assignment()
        if assigned and not self._consumer.paused():
            log.info("buffer full: pausing %d partitions", len(assigned))
            self._consumer.pause(*assigned)

    def resume(self) -> None:
        paused = self._consumer.paused()
        if paused:
            log.info("buffer has room: resuming %d partitions", len(paused))
            self._consumer.resume(*paused)

    @property
    def paused(self) -> bool:
        return bool(self._consumer.paused())

    def lag(self) -> dict[str, int]:
        """Per partition: end offset minus position (what is left to read); a broker round trip, so it also
        tells whether the broker answers (TemporaryError if not within lag_timeout_ms)."""
        try:
            assigned = list(self._consumer.assignment())
            if not assigned:
                return {}
            ends = self._consumer.end_offsets(assigned, timeout_ms=self._lag_timeout_ms)
            return {f"{tp.topic}/{tp.partition}": max(0, ends[tp] - self._consumer.position(tp)) for tp in assigned}
        except KafkaError as exc:
            raise TemporaryError(f"{self._where} does not answer: {exc}") from None

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class _Revocations(ConsumerRebalanceListener):  # type: ignore[misc]
    """On a rebalance, forget what was polled from partitions we lose: their new owner re-reads it.

    The daemon polls, stores and commits in one thread, so when poll() triggers a
    rebalance every stored record is already committed; only records polled and not yet
    stored (after a failed write) can be pending here, and those must not be committed.
    """

    def __init__(self, pending: dict[Any, int]) -> None:
        self._pending = pending

    def on_partitions_revoked(self, revoked: Any) -> None:
        for tp in revoked:
            self._pending.pop(tp, None)

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned partitions: %s", sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))

"""Captured exchanges to a Kafka topic: keyed by request id, acks=all, idempotent where the broker allows."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from taoflow.connectors.errors import TemporaryError
from taoflow.connectors.sinks.base import Captured

__all__ = ["KafkaSink"]

log = logging.getLogger(__name__)


class KafkaSink:
    """A producer made on first use (and again after a failure), so a broker that is down at start is an outage."""

    name = "kafka"

    def __init__(
        self,
        bootstrap_servers: Sequence[str],
        topic: str,
        *,
        client_options: Mapping[str, Any] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.topic = topic
        self._servers = list(bootstrap_servers)
        self._options = dict(client_options or {})
        self._timeout_s = timeout_s
        self._producer: KafkaProducer | None = None
        self._idempotent = True

    def _make(self) -> KafkaProducer:
        ms = int(self._timeout_s * 1000)
        options = dict(
            bootstrap_servers=self._servers,
            acks="all",
            linger_ms=5,
            max_block_ms=ms,
            request_timeout_ms=ms,
            bootstrap_timeout_ms=ms,
            delivery_timeout_ms=max(ms + 1, 2 * ms),
            **self._options,
        )
        try:
            return KafkaProducer(enable_idempotence=self._idempotent, **options)
        except KafkaError as exc:
            if self._idempotent and "idempot" in str(exc).lower():
                log.warning("the broker refuses idempotent producers (%s): producing with acks=all only", exc)
                self._idempotent = False
                return KafkaProducer(enable_idempotence=False, **options)
            raise

    def send(self, records: Sequence[Captured]) -> None:
        try:
            if self._producer is None:
                self._producer = self._make()
            futures = [self._producer.send(self.topic, key=r.key.encode(), value=r.value) for r in records]
            self._producer.flush(timeout=self._timeout_s)
            for future in futures:
                future.get(timeout=0)
        except KafkaError as exc:
            self._reset()
            raise TemporaryError(f"cannot write to Kafka topic {self.topic} at {self._servers}: {exc}") from None

    def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception as exc:  # closing a broken producer must not hide the error that broke it
                log.debug("closing the Kafka producer: %s", exc)

    def close(self) -> None:
        self._reset()

"""What the gateway captures of an exchange, and the thread that moves spooled records to the sink.

A record has the Databricks inference-table shape that taoflow's sources parse (connectors/sources/
formats.py): `databricks_request_id`, `timestamp_ms`, `status_code`, `execution_time_ms`, the
request as the client sent it, the response (a streamed one assembled into a completion object),
`request_metadata` (model, served version, replica, gateway) and the task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from taoflow.connectors.errors import TemporaryError
from taoflow.connectors.sinks.base import CaptureSink
from taoflow.connectors.sources.redaction import Redactor
from taoflow.daemon.gateway.spool import Spool, SpoolDepth
from taoflow.policies.ingest_filter import sampled_in

__all__ = ["Drainer", "assemble_stream", "exchange_record", "wanted"]

log = logging.getLogger(__name__)

#: Most `data:` events of one stream assembled (a stream of more is captured cut, marked truncated).
_MAX_EVENTS = 100_000


def wanted(request_id: str, task: str, *, rate: float, task_rates: Mapping[str, float]) -> bool:
    """Whether to capture this exchange: by request-id hash, so every gateway replica agrees."""
    return sampled_in(request_id, rate) and sampled_in(request_id, task_rates.get(task, 1.0))


def assemble_stream(body: bytes, *, chat: bool) -> dict[str, Any]:
    """An OpenAI server-sent-event stream as the completion object it adds up to (every choice)."""
    texts: dict[int, list[str]] = {}
    finish: dict[int, Any] = {}
    head: dict[str, Any] = {}
    usage = None
    for count, line in enumerate(body.split(b"\n")):
        if count > _MAX_EVENTS:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        if not head:
            head = {k: event[k] for k in ("id", "created", "model") if k in event}
        if isinstance(event.get("usage"), dict):
            usage = event["usage"]
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0) if isinstance(choice.get("index"), int) else 0
            piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
            if isinstance(piece, str):
                texts.setdefault(index, []).append(piece)
            if choice.get("finish_reason") is not None:
                finish[index] = choice["finish_reason"]
    choices = []
    for index in sorted(set(texts) | set(finish)):
        text = "".join(texts.get(index, ()))
        body_of = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        choices.append({"index": index, **body_of, "finish_reason": finish.get(index)})
    completion = {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices}
    if usage is not None:
        completion["usage"] = usage
    return completion


def exchange_record(
    *,
    request_id: str,
    task: str,
    request: Mapping[str, Any],
    status: int,
    response: Mapping[str, Any] | None,
    started: float,
    latency_s: float,
    model: str,
    version: str,
    replica: str,
    gateway: str,
    redactor: Redactor,
) -> bytes:
    metadata = {"model_name": model, "served_version": version, "replica": replica, "gateway": gateway}
    record = {
        "databricks_request_id": request_id,
        "timestamp_ms": int(started * 1000),
        "status_code": status,
        "execution_time_ms": int(latency_s * 1000),
        "task": task,
        "request": redactor.value("request", dict(request)) if redactor.enabled else request,
        "response": (redactor.value("response", dict(response)) if redactor.enabled else response)
        if response is not None
        else None,
        "request_metadata": metadata,
    }
    return orjson.dumps(record)


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

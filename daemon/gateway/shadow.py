"""Shadow deploys at the gateway: a sample of the stable name's requests mirrored to the candidate the daemon names
(route table `shadows`), its answers never returned, each pair sent to the daemon to be judged.

A mirror runs beside the client's request, never in its way: the relay only hands over the champion's answer when
it has sent it. A mirror is non-streaming (a streamed request is mirrored whole), its `max_tokens` capped, bounded in
time, in number (`max_concurrent`) and in its share of what this gateway has in flight on the replicas
(`max_share`). Pairs are redacted as captures are, queued in memory (bounded: a full queue drops the newest, counted)
and posted to the daemon in batches. A gateway that dies loses the pairs it had not sent: a shadow is a sample, and
the daemon decides on the pairs it has.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from taoflow.connectors.serving.upstream import Broken, Refused, Timeout, Upstream
from taoflow.connectors.sources.redaction import Redactor
from taoflow.daemon.gateway.captured import RecordFacts, build_record
from taoflow.daemon.gateway.exchange import Exchange
from taoflow.daemon.gateway.metrics import GatewayMetrics
from taoflow.daemon.gateway.routing import Choice, Router
from taoflow.daemon.settings import Settings, sample_key
from taoflow.policies.ingest_filter import sampled_in

__all__ = ["Mirrored", "Shadowing"]

log = logging.getLogger("taoflow.daemon.gateway.app")

#: Pairs waiting to be sent to the daemon; more are dropped (counted).
MAX_QUEUE = 256
#: Pairs per post, and the bytes one post may hold (the daemon reads at most twice this).
BATCH_PAIRS = 32
BATCH_BYTES = 4 << 20
#: The key each endpoint caps an answer's length with.
_LENGTH_KEY = {
    "chat": "max_tokens",
    "completions": "max_tokens",
    "messages": "max_tokens",
    "responses": "max_output_tokens",
}


class Mirrored:
    """One request's mirror, waiting for the champion's answer (set by the relay once the client has it)."""

    def __init__(self, served: str, replica: str) -> None:
        self.served = served
        self.replica = replica
        self.champion: asyncio.Future[tuple[int, bytes, bool, float] | None] = (
            asyncio.get_running_loop().create_future()
        )

    def answered(self, status: int, body: bytes, *, streamed: bool, latency_s: float) -> None:
        if not self.champion.done():
            self.champion.set_result((status, body, streamed, latency_s))

    def failed(self) -> None:
        if not self.champion.done():
            self.champion.set_result(None)


class Shadowing:
    def __init__(
        self,
        settings: Settings,
        *,
        gateway: str,
        router: Router,
        metrics: GatewayMetrics,
        client: Callable[[], Upstream],
        daemon_url: str,
        daemon_headers: dict[str, str],
    ) -> None:
        self.gateway = gateway
        self.router = router
        self.metrics = metrics
        self._client = client
        self._daemon_url = daemon_url
        self._daemon_headers = daemon_headers
        self._kinds = tuple(Redactor(settings.ingest.redact).kinds)
        self._key = sample_key(settings)
        self._cap = settings.gateway.capture.max_record_bytes
        self._queue: deque[dict[str, Any]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self.inflight = 0

    # ------------------------------------------------------------------ mirroring
    def begin(self, exchange: Exchange, choice: Choice) -> Mirrored | None:
        """Mirror this request to the shadowed candidate when its name has one, it is sampled in and the budget
        allows; None otherwise. Returns at once: the mirror runs as a task of its own."""
        mirror = self.router.shadows.get(exchange.model)
        if mirror is None or not choice.routed or choice.name == mirror["version"]:
            return None
        if not sampled_in(exchange.request_id, float(mirror.get("rate", 0.0)), key=self._key):
            return None
        if self.inflight >= int(mirror.get("max_concurrent", 1)):
            self.metrics.shadow.labels("skipped_concurrency").inc()
            return None
        outstanding = sum(r.outstanding for r in self.router.replicas.values())
        if self.inflight + 1 > float(mirror.get("max_share", 0.0)) * (outstanding + 1):
            self.metrics.shadow.labels("skipped_share").inc()
            return None
        handle = Mirrored(choice.name, choice.url)
        self.inflight += 1
        self.metrics.shadow.labels("mirrored").inc()
        task = asyncio.create_task(self._mirror(exchange, mirror, handle))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return handle

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.inflight -= 1
        if not task.cancelled() and task.exception() is not None:
            log.error("gateway: a shadow mirror failed: %r", task.exception())
            self.metrics.shadow.labels("failed").inc()

    async def _mirror(self, exchange: Exchange, mirror: dict[str, Any], handle: Mirrored) -> None:
        version = str(mirror["version"])
        started, wall = time.monotonic(), time.time()
        try:
            async with asyncio.timeout(float(mirror.get("timeout_seconds", 120.0))):
                answer = await self._ask(exchange, version, int(mirror.get("max_tokens", 512)))
                if answer is None:
                    return
                champion = await handle.champion
        except TimeoutError:
            self.metrics.shadow.labels("timeout").inc()
            return
        if champion is None:
            self.metrics.shadow.labels("champion_failed").inc()
            return
        status, body, streamed, latency_s = champion
        pair = await asyncio.to_thread(
            self._pair,
            exchange,
            mirror,
            champion=(handle.served, handle.replica, status, body, streamed, latency_s),
            candidate=answer,
            wall=wall,
        )
        if pair is None:
            self.metrics.shadow.labels("failed").inc()
            return
        log.debug("gateway: %s mirrored to %s in %.2f s", exchange.request_id, version, time.monotonic() - started)
        if len(self._queue) >= MAX_QUEUE:
            self.metrics.shadow.labels("dropped").inc()
            return
        self._queue.append(pair)
        self.metrics.shadow.labels("paired").inc()

    async def _ask(self, exchange: Exchange, version: str, max_tokens: int) -> tuple[str, bytes, float] | None:
        """The candidate's whole answer to the request (non-streaming, its length capped), or None."""
        choice = self.router.serving(version)
        if choice is None:
            self.metrics.shadow.labels("no_replica").inc()
            return None
        payload = {**exchange.payload, "model": version, "stream": False}
        payload.pop("stream_options", None)
        key = _LENGTH_KEY[exchange.endpoint]
        asked = payload.get(key)
        payload[key] = min(asked, max_tokens) if isinstance(asked, int) and asked > 0 else max_tokens
        self.router.begin(choice)
        sent = time.monotonic()
        try:
            # Its own request id: a replica (vLLM) refuses a second request under an id it is still answering.
            headers = {**exchange.headers, "x-request-id": f"{exchange.request_id}-shadow"}
            upstream = await self._client().open(choice.url + exchange.path, orjson.dumps(payload), headers)
            try:
                body = await upstream.read(self._cap)
            finally:
                await upstream.close()
        except (Refused, Timeout, Broken) as exc:
            log.debug("gateway: the mirror of %s to %s failed: %s", exchange.request_id, choice.url, exc)
            self.metrics.shadow.labels("failed").inc()
            return None
        finally:
            self.router.end(choice)
        if upstream.status != 200:
            log.debug(
                "gateway: the mirror of %s got %d from %s: %r",
                exchange.request_id,
                upstream.status,
                choice.url,
                body[:200],
            )
            return None
        return choice.url, body, time.monotonic() - sent

    def _pair(
        self,
        exchange: Exchange,
        mirror: dict[str, Any],
        *,
        champion: tuple[str, str, int, bytes, bool, float],
        candidate: tuple[str, bytes, float],
        wall: float,
    ) -> dict[str, Any] | None:
        """Both answers as captured rows (redacted as captures are), or None when either does not parse."""
        served, replica, status, body, streamed, latency_s = champion
        url, answer, candidate_latency = candidate

        def row(version: str, replica: str, code: int, kept: bytes, *, stream: bool, latency: float) -> bytes | None:
            facts = RecordFacts(
                request_id=exchange.request_id,
                task=exchange.task,
                endpoint=exchange.endpoint,
                status=code,
                started=wall,
                latency_s=latency,
                model=exchange.model,
                version=version,
                replica=replica,
                gateway=self.gateway,
            )
            return build_record(facts, exchange.payload, kept, streamed=stream, kinds=self._kinds)

        if status != 200:
            return None
        first = row(served, replica, status, body, stream=streamed, latency=latency_s)
        second = row(str(mirror["version"]), url, 200, answer, stream=False, latency=candidate_latency)
        if first is None or second is None:
            return None
        return {
            "deploy": int(mirror.get("deploy", 0)),
            "request_id": exchange.request_id,
            "champion": orjson.loads(first),
            "candidate": orjson.loads(second),
        }

    # ------------------------------------------------------------------ sending
    async def send(self) -> None:
        """Post the queued pairs to the daemon in batches; on failure they wait for the next try."""
        while self._queue:
            batch: list[dict[str, Any]] = []
            size = 0
            for pair in list(self._queue)[:BATCH_PAIRS]:
                pair_size = len(orjson.dumps(pair))
                if batch and size + pair_size > BATCH_BYTES:
                    break
                batch.append(pair)
                size += pair_size
            try:
                status, answer = await self._client().post_json(
                    f"{self._daemon_url}/v1/shadow/pairs",
                    {"gateway": self.gateway, "pairs": batch},
                    headers=self._daemon_headers,
                    timeout_s=10.0,
                    limit=1 << 16,
                )
            except (Refused, Timeout, Broken) as exc:
                log.debug("gateway: the daemon did not take %d shadow pair(s) now: %s", len(batch), exc)
                return
            if status >= 500:
                return
            for _ in batch:
                self._queue.popleft()
            kept = int(answer.get("kept", 0)) if status == 200 and isinstance(answer, dict) else 0
            self.metrics.shadow.labels("sent").inc(kept)
            self.metrics.shadow.labels("refused").inc(len(batch) - kept)
            if status != 200:
                log.warning("gateway: the daemon refused %d shadow pair(s) with %d", len(batch), status)

    def export(self) -> None:
        self.metrics.shadow_inflight.set(self.inflight)
        budgets = [float(m.get("max_share", 0.0)) for m in self.router.shadows.values()]
        self.metrics.shadow_budget.set(max(budgets, default=0.0))

    async def finish(self, deadline_s: float = 5.0) -> None:
        """Stop: mirrors still running are abandoned; what is queued gets one last try (bounded)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=deadline_s)
        try:
            async with asyncio.timeout(deadline_s):
                await self.send()
        except TimeoutError:
            pass

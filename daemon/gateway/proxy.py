"""The gateway's proxy: a client's request relayed to a replica that serves the version its model name routes to.

Bytes from the replicas are passed to the client unchanged (server-sent events included) as they arrive. Only
what is safe is retried, and only before any byte went to the client: a replica that refused the connection, or
one that answered 404 for a version it stopped serving since its last poll. Each exchange's record is spooled
before the response's last chunk is sent (capture.durable), so a client that got a whole answer can count on
its capture.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from taoflow.connectors.serving.upstream import Broken, Refused, Timeout, Upstream, UpstreamAnswer
from taoflow.daemon.gateway.auth import AUTHENTICATED
from taoflow.daemon.gateway.capture import Capture
from taoflow.daemon.gateway.exchange import Attempt, Exchange
from taoflow.daemon.gateway.metrics import GatewayMetrics
from taoflow.daemon.gateway.routing import Choice, Router
from taoflow.daemon.gateway.shadow import Mirrored, Shadowing
from taoflow.daemon.settings import GatewaySettings

__all__ = ["ENDPOINTS", "Proxy"]

log = logging.getLogger("taoflow.daemon.gateway.app")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
#: Headers that belong to one connection, not to the exchange (RFC 9110 §7.6.1), and ones the server sets.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "date",
        "server",
    }
)
#: The paths relayed, and what each is called in metrics and captured records.
#: What the gateway relays and captures: OpenAI chat and completions, OpenAI Responses, Anthropic Messages.
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
}


class Proxy:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        router: Router,
        metrics: GatewayMetrics,
        capture: Capture | None,
        client: Callable[[], Upstream],
        shadow: Shadowing | None = None,
        replica_key: str | None = None,
        keep_client_key: bool = True,
        known_tasks: frozenset[str] | None = None,
    ) -> None:
        self.g = settings
        self._known_tasks = known_tasks or frozenset()  # none configured: no client label is honoured
        self._replica_auth = f"Bearer {replica_key}" if replica_key else None
        self._keep_client_key = keep_client_key
        self.router = router
        self.metrics = metrics
        self.capture = capture
        self.shadow = shadow
        self._client = client  # made when the app starts (it belongs to the event loop)

    async def handle(self, request: Request) -> Response:
        exchange_or_error = await self._exchange(request)
        if isinstance(exchange_or_error, Response):
            return exchange_or_error
        exchange = exchange_or_error
        tried: set[tuple[str, str]] = set()
        last_refusal: tuple[int, bytes, dict[str, str]] | None = None
        for _ in range(self.g.retries + 1):
            choice = self.router.choose(exchange.model, exclude=frozenset(tried))
            if choice is None:
                break
            self.router.begin(choice)
            self.metrics.inflight.inc()
            sent_at = time.monotonic()
            try:
                upstream = await self._client().open(
                    choice.url + exchange.path, exchange.body_for(choice), exchange.headers
                )
            except Refused as exc:
                self._finished(choice)
                self.router.down(choice.url)
                tried.add((choice.url, choice.name))
                self.metrics.retries.labels("refused").inc()
                log.warning("gateway: %s refused %s: %s", choice.url, exchange.request_id, exc)
                continue
            except Timeout:
                self._finished(choice)
                return self._error(504, "the replica did not answer in time", exchange.endpoint, exchange.request_id)
            except Broken as exc:
                self._finished(choice)
                return self._error(502, f"the replica failed: {exc}", exchange.endpoint, exchange.request_id)
            if upstream.status == 404 and choice.routed:
                # The version was unloaded since the replica's last poll: nothing was generated, try another.
                last_refusal = await self._gone(upstream, choice, tried)
                continue
            return self._relayed(exchange, Attempt(choice, sent_at, upstream))
        if last_refusal is not None:
            status, content, upstream_headers = last_refusal
            self.metrics.requests.labels(exchange.endpoint, "4xx").inc()
            media = upstream_headers.get("content-type", "application/json")
            return Response(
                content, status_code=status, media_type=media, headers={"x-request-id": exchange.request_id}
            )
        if tried:
            return self._error(502, "no replica could be reached", exchange.endpoint, exchange.request_id)
        return self._error(503, f"no healthy replica serves {exchange.model!r}", exchange.endpoint, exchange.request_id)

    async def _exchange(self, request: Request) -> Exchange | Response:
        """The request read (bounded) and understood, or the answer that refuses it."""
        started, wall = time.monotonic(), time.time()
        endpoint = ENDPOINTS[request.url.path]
        request_id = request.headers.get("x-request-id", "")
        if not _ID.match(request_id):
            request_id = uuid.uuid4().hex
        try:
            with anyio.fail_after(self.g.client_timeout_seconds):
                body = await self._body(request)
        except ClientDisconnect:
            return Response(status_code=499)
        except TimeoutError:
            return self._error(
                408, f"the request body took over {self.g.client_timeout_seconds:g} s", endpoint, request_id
            )
        if body is None:
            return self._error(
                413, f"request bodies are limited to {self.g.max_body_bytes} bytes", endpoint, request_id
            )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("model"), str):
            return self._error(400, "the body must be a JSON object with a model name", endpoint, request_id)
        model = payload["model"]
        if model in self.router.shadowed():
            # A candidate in shadow answers the daemon only: no client may call it by its version's name.
            return self._error(404, f"The model `{model}` does not exist.", endpoint, request_id)
        # Only a client that presented a key may label its traffic for training, and only with a known task: a
        # label of its own would be a share of the buffer and of every round.
        label = request.headers.get("x-taoflow-task", "") if request.scope.get(AUTHENTICATED) else ""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        if not self._keep_client_key or self._replica_auth:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        if self._replica_auth:
            headers["authorization"] = self._replica_auth
        headers["x-request-id"] = request_id
        if self.g.capture.token_ids and endpoint in ("chat", "completions") and "return_token_ids" not in payload:
            payload = {**payload, "return_token_ids": True}
            body = orjson.dumps(payload)
        return Exchange(
            request_id=request_id,
            endpoint=endpoint,
            path=request.url.path,
            model=model,
            task=label if label in self._known_tasks else model,
            payload=payload,
            body=body,
            headers=headers,
            started=started,
            wall=wall,
        )

    async def _gone(
        self, upstream: UpstreamAnswer, choice: Choice, tried: set[tuple[str, str]]
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            refusal = await upstream.read(65536)
        except (Timeout, Broken):
            refusal = b""
        await upstream.close()
        self._finished(choice)
        self.router.lost(choice.url, choice.name)
        tried.add((choice.url, choice.name))
        self.metrics.retries.labels("gone").inc()
        return 404, refusal, upstream.headers

    def _relayed(self, exchange: Exchange, attempt: Attempt) -> Response:
        upstream = attempt.upstream
        ending = _Ending(
            upstream,
            lambda: self._finished(attempt.choice),
            abandoned=self.metrics.requests.labels(exchange.endpoint, "499").inc,  # the client left mid-answer
        )
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP or k.lower() == "content-length"}
        out["x-request-id"] = exchange.request_id
        if attempt.choice.counted:  # a version or a listed name; never echo a string only the client chose
            out["x-taoflow-served"] = attempt.choice.name
        mirrored = self.shadow.begin(exchange, attempt.choice) if self.shadow is not None else None
        relay = self._relay(exchange, attempt, ending, mirrored)
        return _Relayed(relay, on_close=ending.close, status_code=upstream.status, headers=out)

    async def _relay(
        self, exchange: Exchange, attempt: Attempt, ending: _Ending, mirrored: Mirrored | None
    ) -> AsyncIterator[bytes]:
        upstream = attempt.upstream
        capturing = self.capture is not None and self.capture.wants(exchange)
        keep = capturing or mirrored is not None  # a mirror's pair needs the champion's answer too
        cap = self.g.capture.max_record_bytes
        kept = bytearray()
        too_large = len(exchange.body) > cap
        pending: bytes | None = None
        upstream_done = attempt.sent_at
        deadline = exchange.started + self.g.request_timeout_seconds
        complete = False
        try:
            async for chunk in upstream.chunks():
                if time.monotonic() > deadline:
                    raise TimeoutError
                if keep and not too_large:
                    if len(kept) + len(chunk) + len(exchange.body) > cap:
                        too_large = True
                    else:
                        kept += chunk
                if pending is not None:
                    yield pending
                pending = chunk
            upstream_done = time.monotonic()
            complete = True
        except TimeoutError:
            log.warning(
                "gateway: %s passed request_timeout_seconds at %s: cut", exchange.request_id, attempt.choice.url
            )
        except (Timeout, Broken) as exc:
            log.warning("gateway: %s from %s broke off: %s", exchange.request_id, attempt.choice.url, exc)
        finally:
            await ending.release()
            if mirrored is not None:
                if complete and not too_large:
                    streamed = upstream.headers.get("content-type", "").startswith("text/event-stream")
                    latency = upstream_done - attempt.sent_at
                    mirrored.answered(upstream.status, bytes(kept), streamed=streamed, latency_s=latency)
                else:
                    mirrored.failed()
        # Everything is counted before the last chunk goes: a client that has its whole answer may close the
        # connection before this generator is resumed again.
        if complete and capturing and self.capture is not None:
            await self.capture.record(exchange, attempt.choice, upstream, bytes(kept), too_large=too_large)
        finished = time.monotonic()
        ending.counted = True
        self.metrics.requests.labels(exchange.endpoint, f"{upstream.status // 100}xx" if complete else "5xx").inc()
        self.metrics.seconds.observe(finished - exchange.started)
        if complete:
            self.metrics.added.observe(max(0.0, (finished - exchange.started) - (upstream_done - attempt.sent_at)))
            if pending is not None:
                yield pending

    def _finished(self, choice: Choice) -> None:
        self.router.end(choice)
        self.metrics.inflight.dec()

    async def _body(self, request: Request) -> bytes | None:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.g.max_body_bytes):
            return None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.g.max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    def _error(self, status: int, message: str, endpoint: str, request_id: str) -> JSONResponse:
        self.metrics.requests.labels(endpoint, f"{status // 100}xx").inc()
        kind = "invalid_request_error" if status < 500 else "server_error"
        return JSONResponse(
            {"error": {"message": message, "type": kind, "code": status}},
            status_code=status,
            headers={"x-request-id": request_id},
        )


class _Ending:
    """One relayed answer's end, done once: the replica's response closed and the request counted out, whether the
    relay ran to its end, the client left mid-stream, or the response was never started (a client gone first)."""

    def __init__(
        self, upstream: UpstreamAnswer, finished: Callable[[], None], *, abandoned: Callable[[], None]
    ) -> None:
        self.upstream = upstream
        self.counted = False  # set by the relay once it has counted the request (answered, or failed upstream)
        self._finished = finished
        self._abandoned = abandoned
        self._closed = False

    async def close(self) -> None:
        """The response is over: a request the relay never counted was left by its client."""
        if not self.counted:
            self.counted = True
            self._abandoned()
        await self.release()

    async def release(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.upstream.close()
        finally:
            self._finished()


class _Relayed(StreamingResponse):
    def __init__(self, content: AsyncIterator[bytes], *, on_close: Callable[[], Awaitable[None]], **kwargs: Any):
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Relay until the answer ends or the client leaves, whichever comes first: a client that hangs up stops
        the relay, which closes the replica's stream (vLLM then aborts the generation instead of finishing it for
        nobody). The request body was read whole before, so what `receive` brings now is the disconnect."""

        async def never() -> dict[str, Any]:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        try:
            async with anyio.create_task_group() as group:

                async def relay() -> None:
                    await super(_Relayed, self).__call__(scope, never, send)
                    group.cancel_scope.cancel()

                group.start_soon(relay)
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()
        finally:
            await self._on_close()

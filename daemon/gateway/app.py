"""The gateway as an ASGI app: proxying, routing, capture, its probes and metrics.

Bytes from the replicas are passed to the client unchanged (server-sent events included) as they
arrive. Only what is safe is retried, and only before any byte went to the client: a replica that
refused the connection, or one that answered 404 for a version it stopped serving since its last
poll. Each exchange's record is spooled before the response's last chunk is sent (capture.durable),
so a client that got a whole answer can count on its capture.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from taoflow.connectors.errors import ConfigurationError, ReplicaUnavailable
from taoflow.connectors.serving.replica import discover_replicas
from taoflow.connectors.serving.upstream import Broken, Refused, Timeout, Upstream, UpstreamAnswer
from taoflow.connectors.sinks.base import CaptureSink
from taoflow.connectors.sources.redaction import Redactor
from taoflow.daemon.gateway.capture import Drainer, assemble_stream, exchange_record, wanted
from taoflow.daemon.gateway.metrics import GatewayMetrics
from taoflow.daemon.gateway.routing import Choice, Router
from taoflow.daemon.gateway.spool import Spool, age
from taoflow.daemon.settings import Settings, admin_token, gateway_token

__all__ = ["Gateway", "build_sink"]

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TASK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
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
_MAX_CONTROL_BYTES = 1 << 20
_ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}


def build_sink(settings: Settings, gateway: str) -> CaptureSink | None:
    c = settings.gateway.capture
    if c.sink == "none":
        return None
    if c.sink == "jsonl":
        from taoflow.connectors.sinks.jsonl import JsonlSink

        return JsonlSink(c.jsonl_dir, gateway=gateway)
    if c.sink == "s3":
        from taoflow.connectors.sinks.s3 import S3Sink

        s3 = settings.source.s3
        if not s3.bucket:
            raise ConfigurationError("gateway.capture.sink: s3 writes to source.s3.bucket/prefix: set source.s3.bucket")
        return S3Sink(s3.bucket, s3.prefix, gateway=gateway, endpoint_url=s3.endpoint_url, region=s3.region)
    from taoflow.connectors.sinks.kafka import KafkaSink
    from taoflow.daemon.ingest.sources import kafka_client_options

    k = settings.source.kafka
    topic = c.topic or (k.topics[0] if k.topics else None)
    if not topic:
        raise ConfigurationError("gateway.capture.sink: kafka needs gateway.capture.topic or source.kafka.topics")
    return KafkaSink(k.bootstrap_servers, topic, client_options=kafka_client_options(settings))


class Gateway:
    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        g = self.g = settings.gateway
        self.id = g.id or socket.gethostname()
        if not _ID.match(self.id):
            raise ConfigurationError(f"gateway.id {self.id!r}: use letters, digits and . _ : - (at most 128)")
        self.registry = registry or CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.router = Router()
        self.redactor = Redactor(settings.ingest.redact)
        key = settings.fleet.api_key
        self._replica_headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        d = settings.daemon
        self.daemon_url = (g.daemon_url or d.admin_url or f"http://{d.admin_host}:{d.admin_port}").rstrip("/")
        token = gateway_token(settings) or (admin_token(settings) if d.admin_token or d.admin_token_file else None)
        self._daemon_headers = {"Authorization": f"Bearer {token}"} if token else {}
        c = g.capture
        c.spool_dir.mkdir(parents=True, exist_ok=True)
        self._routes_cache = c.spool_dir / "routes.json"
        self.sink = build_sink(settings, self.id)
        self.spool = (
            Spool(c.spool_dir / "spool.db", max_bytes=c.spool_max_bytes, durable=c.durable) if self.sink else None
        )
        self.drainer = (
            Drainer(
                self.spool,
                self.sink,
                batch_records=c.batch_records,
                flush_s=c.flush_seconds,
                on_sent=self.metrics.sent.inc,
                on_sink=lambda up: self.metrics.sink_up.set(1 if up else 0),
            )
            if self.spool is not None and self.sink is not None
            else None
        )
        self._load_cached_routes()
        self._routes_read_at: float | None = None
        self.client: Upstream | None = None

    # ------------------------------------------------------------------ the app
    def app(self) -> Starlette:
        routes = [
            Route("/v1/chat/completions", self.proxy, methods=["POST"]),
            Route("/v1/completions", self.proxy, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
        ]
        return Starlette(routes=routes, lifespan=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        g = self.g
        self.client = Upstream(
            connect_timeout_s=g.connect_timeout_seconds,
            timeout_s=g.request_timeout_seconds,
            max_connections=g.max_connections,
        )
        if self.drainer is not None:
            self.drainer.start()
        tasks = [
            asyncio.create_task(self._forever(self._poll_replicas, g.replicas_poll_seconds)),
            asyncio.create_task(self._forever(self._poll_routes, g.routes_poll_seconds)),
            asyncio.create_task(self._forever(self._export, 1.0)),
        ]
        log.info(
            "gateway %s: replicas %s, routes from %s, capture to %s",
            self.id,
            self.settings.fleet.replicas or self.settings.fleet.dns_name,
            self.daemon_url,
            self.sink.name if self.sink else "nowhere",
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.client.close()
            if self.drainer is not None and self.spool is not None:
                left = await asyncio.to_thread(self.drainer.finish, 10.0)
                if left.records:
                    log.warning(
                        "gateway %s: %d captured exchange(s) stay spooled for the next start", self.id, left.records
                    )
            if self.spool is not None:
                self.spool.close()
            if self.sink is not None:
                self.sink.close()

    # ------------------------------------------------------------------ proxying
    async def proxy(self, request: Request) -> Response:
        started = time.monotonic()
        wall = time.time()
        endpoint = _ENDPOINTS[request.url.path]
        request_id = request.headers.get("x-request-id", "")
        if not _ID.match(request_id):
            request_id = uuid.uuid4().hex
        try:
            body = await self._body(request)
        except ClientDisconnect:
            return Response(status_code=499)
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
        task = request.headers.get("x-taoflow-task", "")
        task = task if _TASK.match(task) else model
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["x-request-id"] = request_id
        assert self.client is not None

        tried: set[tuple[str, str]] = set()
        last_refusal: tuple[int, bytes, dict[str, str]] | None = None
        for _ in range(self.g.retries + 1):
            choice = self.router.choose(model, exclude=frozenset(tried))
            if choice is None:
                break
            content = body if choice.name == model else orjson.dumps({**payload, "model": choice.name})
            self.router.begin(choice)
            self.metrics.inflight.inc()
            sent_at = time.monotonic()
            try:
                upstream = await self.client.open(choice.url + request.url.path, content, headers)
            except Refused as exc:
                self._finished(choice)
                self.router.down(choice.url)
                tried.add((choice.url, choice.name))
                self.metrics.retries.labels("refused").inc()
                log.warning("gateway: %s refused %s: %s", choice.url, request_id, exc)
                continue
            except Timeout:
                self._finished(choice)
                return self._error(504, "the replica did not answer in time", endpoint, request_id)
            except Broken as exc:
                self._finished(choice)
                return self._error(502, f"the replica failed: {exc}", endpoint, request_id)
            if upstream.status == 404 and choice.routed:
                # The version was unloaded since the replica's last poll: nothing was generated, try another.
                try:
                    refusal = await upstream.read(65536)
                except (Timeout, Broken):
                    refusal = b""
                await upstream.close()
                self._finished(choice)
                self.router.lost(choice.url, choice.name)
                tried.add((choice.url, choice.name))
                self.metrics.retries.labels("gone").inc()
                last_refusal = (404, refusal, upstream.headers)
                continue
            exchange = _Exchange(
                upstream,
                partial(self._finished, choice),
                abandoned=self.metrics.requests.labels(endpoint, "499").inc,  # the client left mid-answer
            )
            relay = self._relay(
                exchange,
                choice,
                started=started,
                wall=wall,
                sent_at=sent_at,
                endpoint=endpoint,
                request_id=request_id,
                task=task,
                model=model,
                payload=payload,
                body_size=len(body),
            )
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP or k.lower() == "content-length"}
            out.update({"x-request-id": request_id, "x-taoflow-served": choice.name})
            return _Relayed(relay, on_close=exchange.close, status_code=upstream.status, headers=out)
        if last_refusal is not None:
            status, content, upstream_headers = last_refusal
            self.metrics.requests.labels(endpoint, "4xx").inc()
            media = upstream_headers.get("content-type", "application/json")
            return Response(content, status_code=status, media_type=media, headers={"x-request-id": request_id})
        if tried:
            return self._error(502, "no replica could be reached", endpoint, request_id)
        return self._error(503, f"no healthy replica serves {model!r}", endpoint, request_id)

    async def _relay(
        self,
        exchange: _Exchange,
        choice: Choice,
        *,
        started: float,
        wall: float,
        sent_at: float,
        endpoint: str,
        request_id: str,
        task: str,
        model: str,
        payload: dict[str, Any],
        body_size: int,
    ) -> AsyncIterator[bytes]:
        upstream = exchange.upstream
        cap = self.g.capture.max_record_bytes
        keep = self.spool is not None and wanted(
            request_id, task, rate=self.g.capture.sample_rate, task_rates=self.settings.ingest.sample_rates
        )
        kept = bytearray()
        too_large = body_size > cap
        pending: bytes | None = None
        upstream_done = sent_at
        deadline = started + self.g.request_timeout_seconds
        complete = False
        try:
            async for chunk in upstream.chunks():
                if time.monotonic() > deadline:
                    raise TimeoutError
                if keep and not too_large:
                    if len(kept) + len(chunk) + body_size > cap:
                        too_large = True
                    else:
                        kept += chunk
                if pending is not None:
                    yield pending
                pending = chunk
            upstream_done = time.monotonic()
            complete = True
        except TimeoutError:
            log.warning("gateway: %s passed request_timeout_seconds at %s: cut", request_id, choice.url)
        except (Timeout, Broken) as exc:
            log.warning("gateway: %s from %s broke off: %s", request_id, choice.url, exc)
        finally:
            await exchange.release()
        # Everything is counted before the last chunk goes: a client that has its whole answer may close the
        # connection before this generator is resumed again.
        if complete and keep:
            await self._capture(
                kept,
                too_large=too_large,
                upstream=upstream,
                choice=choice,
                wall=wall,
                started=started,
                request_id=request_id,
                task=task,
                model=model,
                payload=payload,
                endpoint=endpoint,
            )
        finished = time.monotonic()
        exchange.counted = True
        self.metrics.requests.labels(endpoint, f"{upstream.status // 100}xx" if complete else "5xx").inc()
        self.metrics.seconds.observe(finished - started)
        if complete:
            self.metrics.added.observe(max(0.0, (finished - started) - (upstream_done - sent_at)))
            if pending is not None:
                yield pending

    async def _capture(
        self,
        kept: bytearray,
        *,
        too_large: bool,
        upstream: UpstreamAnswer,
        choice: Choice,
        wall: float,
        started: float,
        request_id: str,
        task: str,
        model: str,
        payload: dict[str, Any],
        endpoint: str,
    ) -> None:
        assert self.spool is not None
        if too_large:
            self.metrics.dropped.labels("too_large").inc()
            return
        streamed = upstream.headers.get("content-type", "").startswith("text/event-stream")
        try:
            response = assemble_stream(bytes(kept), chat=endpoint == "chat") if streamed else orjson.loads(kept)
        except orjson.JSONDecodeError:
            response = None
        if response is not None and not isinstance(response, dict):
            response = None
        if response is None and upstream.status == 200:
            self.metrics.dropped.labels("unparseable").inc()
            return
        record = exchange_record(
            request_id=request_id,
            task=task,
            request=payload,
            status=upstream.status,
            response=response,
            started=wall,
            latency_s=time.monotonic() - started,
            model=model,
            version=choice.name,
            replica=choice.url,
            gateway=self.id,
            redactor=self.redactor,
        )
        done = self.spool.put(request_id, record, wall)
        if not self.g.capture.durable:
            done.add_done_callback(lambda f: self._spooled(f.result()))
            return
        try:
            self._spooled(await asyncio.wait_for(asyncio.wrap_future(done), timeout=10.0))
        except TimeoutError:
            log.warning("gateway: the capture spool took over 10 s for %s: answered before it was on disk", request_id)

    def _spooled(self, accepted: bool) -> None:
        if accepted:
            self.metrics.captured.inc()
        else:
            self.metrics.dropped.labels("spool_full").inc()

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

    # ------------------------------------------------------------------ the gateway's own answers
    async def models(self, request: Request) -> Response:
        data = [{"id": name, "object": "model", "owned_by": "taoflow"} for name in sorted(self.router.names())]
        return JSONResponse({"object": "list", "data": data})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        up = sum(1 for r in self.router.replicas.values() if r.healthy)
        ready = up > 0
        body = {"ready": ready, "replicas_up": up, "routes_generation": self.router.generation}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_text(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ background
    async def _forever(self, step: Callable[[], Awaitable[None]], interval_s: float) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gateway background step %s failed", getattr(step, "__name__", step))
            await asyncio.sleep(interval_s)

    async def _poll_replicas(self) -> None:
        f = self.settings.fleet
        try:
            urls = await asyncio.to_thread(discover_replicas, f.replicas, dns_name=f.dns_name, port=f.port)
        except ReplicaUnavailable as exc:
            log.warning("gateway: %s (keeping the replicas known)", exc)
            urls = list(self.router.replicas)
        self.router.set_replicas(urls)
        seen = await asyncio.gather(*(self._served_names(url) for url in urls))
        for url, names in zip(urls, seen, strict=True):
            self.router.observed(url, names)
        up = sum(1 for r in self.router.replicas.values() if r.healthy)
        self.metrics.replicas.labels("up").set(up)
        self.metrics.replicas.labels("down").set(len(self.router.replicas) - up)

    async def _served_names(self, url: str) -> list[str] | None:
        assert self.client is not None
        try:
            status, answer = await self.client.get_json(
                f"{url}/v1/models",
                headers=self._replica_headers,
                timeout_s=self.g.connect_timeout_seconds + 3,
                limit=_MAX_CONTROL_BYTES,
            )
        except (Refused, Timeout, Broken):
            return None
        data = answer.get("data") if status == 200 and isinstance(answer, dict) else None
        if not isinstance(data, list):
            return None
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def _poll_routes(self) -> None:
        assert self.client is not None
        report = {"gateway": self.id, "generation": self.router.generation, "inflight": dict(self.router.inflight)}
        try:
            status, table = await self.client.post_json(
                f"{self.daemon_url}/v1/routes/report",
                report,
                headers=self._daemon_headers,
                timeout_s=5.0,
                limit=_MAX_CONTROL_BYTES,
            )
        except (Refused, Timeout, Broken) as exc:
            log.debug("gateway: the daemon at %s is unreachable (%s): keeping the routes known", self.daemon_url, exc)
            return
        if status != 200 or not isinstance(table, dict):
            log.warning("gateway: the daemon answered the route report with %d", status)
            return
        self._routes_read_at = time.monotonic()
        if isinstance(table.get("generation"), int) and table["generation"] > self.router.generation:
            # A deploy loads a version on the replicas before it routes to it: read what they serve now, so the
            # new routes never meet a stale view of the replicas (the next poll could be seconds away).
            await self._poll_replicas()
        if self.router.apply(table):
            self._save_routes(table)

    async def _export(self) -> None:
        m = self.metrics
        m.routes_generation.set(self.router.generation)
        if self._routes_read_at is not None:
            m.routes_age.set(time.monotonic() - self._routes_read_at)
        if self.spool is not None:
            depth = await asyncio.to_thread(self.spool.depth)
            m.spool_records.set(depth.records)
            m.spool_bytes.set(depth.bytes)
            m.capture_lag.set(age(depth))

    def _load_cached_routes(self) -> None:
        try:
            table = json.loads(self._routes_cache.read_text())
        except (OSError, ValueError):
            return
        if isinstance(table, dict) and self.router.apply(table):
            log.info("gateway: last known routes (generation %d) until the daemon answers", self.router.generation)

    def _save_routes(self, table: dict[str, Any]) -> None:
        temporary = self._routes_cache.with_suffix(".tmp")
        temporary.write_text(json.dumps(table))
        os.replace(temporary, self._routes_cache)


class _Exchange:
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


def serve(settings: Settings) -> int:
    """Run the gateway until SIGTERM or SIGINT (in-flight requests finish; the spool is flushed, bounded)."""
    import uvicorn

    gateway = Gateway(settings)
    g = settings.gateway
    config = uvicorn.Config(
        gateway.app(),
        host=g.host,
        port=g.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=30,
    )
    server = _Server(config)
    log.info("taoflow gateway %s listening on http://%s:%d", gateway.id, g.host, g.port)
    server.run()
    return 0


class _Server:
    """uvicorn's server, exiting 0 after a graceful SIGTERM (uvicorn re-raises the signal once it has drained)."""

    def __init__(self, config: Any) -> None:
        import uvicorn

        class Quiet(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                super().handle_exit(sig, frame)
                self._captured_signals.clear()  # drained and stopped: an orderly exit, not death by signal

        self._server = Quiet(config)

    def run(self) -> None:
        self._server.run()

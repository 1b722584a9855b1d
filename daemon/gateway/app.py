"""The gateway assembled: its parts built from the settings, the ASGI app's routes, its probes and metrics, and
`serve`. The proxy relays (proxy.py), capture keeps what it relays (capture.py), the pollers keep the replicas and
the route table current (pollers.py)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.serving.upstream import Upstream
from taoflow.daemon.gateway.auth import ClientGuard
from taoflow.daemon.gateway.capture import Capture, build_sink
from taoflow.daemon.gateway.metrics import GatewayMetrics
from taoflow.daemon.gateway.pollers import Pollers
from taoflow.daemon.gateway.proxy import ENDPOINTS, Proxy
from taoflow.daemon.gateway.routing import Router
from taoflow.daemon.gateway.shadow import Shadowing
from taoflow.daemon.settings import (
    Settings,
    admin_token,
    gateway_api_keys,
    gateway_token,
    known_tasks,
    metrics_token,
)

__all__ = ["Gateway", "build_sink", "serve"]

log = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


class Gateway:
    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        g = settings.gateway
        self.id = g.id or socket.gethostname()
        if not _ID.match(self.id):
            raise ConfigurationError(f"gateway.id {self.id!r}: use letters, digits and . _ : - (at most 128)")
        self.registry = registry or CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.router = Router()
        d = settings.daemon
        daemon_url = (g.daemon_url or d.admin_url or f"http://{d.admin_host}:{d.admin_port}").rstrip("/")
        token = gateway_token(settings) or (admin_token(settings) if d.admin_token.given else None)
        self.client_keys = gateway_api_keys(settings)
        self.metrics_token = metrics_token(settings)
        if not self.client_keys and not g.allow_anonymous and g.host not in _LOOPBACK:
            raise ConfigurationError(
                f"gateway.host {g.host!r} is reachable beyond this machine and no client key is set: set"
                " gateway.api_keys (a mounted Secret, one key per line), or gateway.allow_anonymous: true"
            )
        g.capture.spool_dir.mkdir(parents=True, exist_ok=True)
        sink = build_sink(settings, self.id)
        self.capture = Capture(settings, sink, gateway=self.id, metrics=self.metrics) if sink is not None else None
        self.client: Upstream | None = None
        daemon_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.shadow = Shadowing(
            settings,
            gateway=self.id,
            router=self.router,
            metrics=self.metrics,
            client=self._upstream,
            daemon_url=daemon_url,
            daemon_headers=daemon_headers,
        )
        fleet_key = settings.fleet.api_key.get_secret_value() if settings.fleet.api_key else None
        self.proxy = Proxy(
            g,
            router=self.router,
            metrics=self.metrics,
            capture=self.capture,
            client=self._upstream,
            shadow=self.shadow,
            replica_key=fleet_key,
            keep_client_key=not self.client_keys,  # the client's key is ours to check, not the replicas'
            known_tasks=known_tasks(settings),
        )
        self.pollers = Pollers(
            settings,
            gateway=self.id,
            router=self.router,
            metrics=self.metrics,
            capture=self.capture,
            shadow=self.shadow,
            client=self._upstream,
            daemon_url=daemon_url,
            daemon_headers=daemon_headers,
            routes_cache=g.capture.spool_dir / "routes.json",
        )

    def app(self) -> Starlette:
        routes = [
            *(Route(path, self.proxy.handle, methods=["POST"]) for path in ENDPOINTS),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
        ]
        guard = Middleware(
            ClientGuard,
            keys=self.client_keys,
            metrics_token=self.metrics_token,
            refused=lambda path: self.metrics.unauthenticated.inc(),
        )
        return Starlette(routes=routes, middleware=[guard], lifespan=self._lifespan)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        g = self.settings.gateway
        self.client = Upstream(
            connect_timeout_s=g.connect_timeout_seconds,
            timeout_s=g.request_timeout_seconds,
            max_connections=g.max_connections,
        )
        if self.capture is not None:
            self.capture.start()
        tasks = self.pollers.start()
        log.info(
            "gateway %s: replicas %s, routes from %s, capture to %s",
            self.id,
            self.settings.fleet.replicas or self.settings.fleet.dns_name,
            self.pollers.daemon_url,
            self.capture.sink.name if self.capture else "nowhere",
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.shadow.finish()
            await self.client.close()
            if self.capture is not None:
                await self.capture.finish()

    def _upstream(self) -> Upstream:
        if self.client is None:
            raise RuntimeError("the gateway's client exists while its app runs")
        return self.client

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


def serve(settings: Settings) -> int:
    """Run the gateway until SIGTERM or SIGINT (in-flight requests finish; the spool is flushed, bounded)."""
    gateway = Gateway(settings)
    g = settings.gateway
    server = _Server(server_config(gateway))
    log.info("taoflow gateway %s listening on http://%s:%d", gateway.id, g.host, g.port)
    server.run()
    return 0


def server_config(gateway: Gateway, **overrides: Any) -> Any:
    """The uvicorn configuration the gateway serves with: clients bounded in number (`max_client_connections`) and in
    the time their headers may take (`client_timeout_seconds`; the body's is the proxy's)."""
    import uvicorn

    g = gateway.settings.gateway
    options: dict[str, Any] = {
        "host": g.host,
        "port": g.port,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 30,
        "limit_concurrency": g.max_client_connections,
        "http": deadlined_protocol(g.client_timeout_seconds),
        **overrides,
    }
    return uvicorn.Config(gateway.app(), **options)


def deadlined_protocol(seconds: float) -> type[Any]:
    """uvicorn's HTTP protocol (h11), with a deadline on each request's head: a connection that has not sent a whole
    request head `seconds` after it opened, or after its previous answer ended, is closed. (uvicorn bounds idle
    keep-alive connections, not a client that trickles its headers a byte at a time.)"""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class Deadlined(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # a whole head arrived: the body's deadline is the proxy's

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return Deadlined


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

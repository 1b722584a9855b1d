"""The gateway's background work: what each replica serves, the route table (reporting in-flight requests to the
daemon as it reads it), and the gateway's own gauges. The last route table read is kept on disk, so a gateway
that starts while the daemon is away routes as it did."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ReplicaUnavailable
from taoflow.connectors.files import write_atomic
from taoflow.connectors.serving.replica import discover_replicas
from taoflow.connectors.serving.upstream import Broken, Refused, Timeout, Upstream
from taoflow.daemon.gateway.capture import Capture
from taoflow.daemon.gateway.metrics import GatewayMetrics
from taoflow.daemon.gateway.routing import Router
from taoflow.daemon.gateway.shadow import Shadowing
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.spool import age

__all__ = ["Pollers"]

log = logging.getLogger("taoflow.daemon.gateway.app")

_MAX_CONTROL_BYTES = 1 << 20
#: Request ids erased lately that one route answer may name (the daemon sends at most this many).
_MAX_ERASED = 1000


class Pollers:
    def __init__(
        self,
        settings: Settings,
        *,
        gateway: str,
        router: Router,
        metrics: GatewayMetrics,
        capture: Capture | None,
        shadow: Shadowing,
        client: Callable[[], Upstream],
        daemon_url: str,
        daemon_headers: dict[str, str],
        routes_cache: Path,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.router = router
        self.metrics = metrics
        self.capture = capture
        self.shadow = shadow
        self._client = client
        self.daemon_url = daemon_url
        self._daemon_headers = daemon_headers
        key = settings.fleet.api_key
        self._replica_headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        self._routes_cache = routes_cache
        self._routes_read_at: float | None = None
        self._load_cached_routes()

    def start(self) -> list[asyncio.Task[None]]:
        g = self.settings.gateway
        return [
            asyncio.create_task(_forever(self.poll_replicas, g.replicas_poll_seconds)),
            asyncio.create_task(_forever(self.poll_routes, g.routes_poll_seconds)),
            asyncio.create_task(_forever(self.export, 1.0)),
            asyncio.create_task(_forever(self.shadow.send, 1.0)),
        ]

    async def poll_replicas(self) -> None:
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
        try:
            status, answer = await self._client().get_json(
                f"{url}/v1/models",
                headers=self._replica_headers,
                timeout_s=self.settings.gateway.connect_timeout_seconds + 3,
                limit=_MAX_CONTROL_BYTES,
            )
        except (Refused, Timeout, Broken):
            return None
        data = answer.get("data") if status == 200 and isinstance(answer, dict) else None
        if not isinstance(data, list):
            return None
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def poll_routes(self) -> None:
        report = {"gateway": self.gateway, "generation": self.router.generation, "inflight": dict(self.router.inflight)}
        try:
            status, table = await self._client().post_json(
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
            self.metrics.reports_refused.inc()
            log.warning("gateway: the daemon answered the route report with %d", status)
            return
        self._routes_read_at = asyncio.get_running_loop().time()
        erased = table.pop("erased", None)
        if self.capture is not None and isinstance(erased, list):
            keys = [k for k in erased[:_MAX_ERASED] if isinstance(k, str)]
            if keys and (gone := await asyncio.to_thread(self.capture.spool.forget, keys)):
                log.info("gateway: %d captured exchange(s) erased at the daemon dropped from the spool", gone)
        if isinstance(table.get("generation"), int) and table["generation"] > self.router.generation:
            # A deploy loads a version on the replicas before it routes to it: read what they serve now, so the
            # new routes never meet a stale view of the replicas (the next poll could be seconds away).
            await self.poll_replicas()
        if self.router.apply(table):
            write_atomic(self._routes_cache, json.dumps(table), private=False)

    async def export(self) -> None:
        m = self.metrics
        m.routes_generation.set(self.router.generation)
        self.shadow.export()
        if self._routes_read_at is not None:
            m.routes_age.set(asyncio.get_running_loop().time() - self._routes_read_at)
        if self.capture is not None:
            depth = await asyncio.to_thread(self.capture.spool.depth)
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


async def _forever(step: Callable[[], Awaitable[Any]], interval_s: float) -> None:
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gateway background step %s failed", getattr(step, "__name__", step))
        await asyncio.sleep(interval_s)

"""The admin API's door, before anything else runs: the token is checked before a byte of the body is read,
and a body is read only up to a cap (declared or chunked), so an unauthenticated or oversized request costs the
daemon nothing but its headers.

/healthz and /readyz are open; GET /metrics takes the admin token or the read-only metrics token (what a
scraper holds); /v1/routes and /v1/routes/report take the admin token or the gateway token (what `taoflow
gateway` holds); every other route takes the admin token. A missing or malformed Authorization header is 401, a
wrong token 403, a body over the cap 413 — all answered without reading the body.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["MAX_BODY_BYTES", "OPEN_PATHS", "TokenGuard"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Probes answer without a token (what Kubernetes asks).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: The largest request body the admin API reads: its bodies are a reason, a version, a list of tasks.
MAX_BODY_BYTES = 64 << 10
#: What the gateway token may reach: the route table, the gateways' reports and their shadow pairs.
GATEWAY_PATHS = frozenset({"/v1/routes", "/v1/routes/report", "/v1/shadow/pairs"})
#: Larger caps for the paths whose bodies are larger: a batch of shadow pairs (each two captured exchanges).
BODY_CAPS = {"/v1/shadow/pairs": 10 << 20}


class TokenGuard:
    """ASGI middleware: authenticate from the headers, then hand the app a body read up to `max_body` bytes."""

    def __init__(
        self,
        app: App,
        *,
        token: str,
        metrics_token: str | None = None,
        gateway_token: str | None = None,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self._token = token.encode()
        self._metrics_token = metrics_token.encode() if metrics_token else None
        self._gateway_token = gateway_token.encode() if gateway_token else None
        self._max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        cap = BODY_CAPS.get(scope["path"], self._max_body)
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await _answer(send, 413, f"request bodies are limited to {cap} bytes")
            return
        body = await self._read(receive, cap)
        if body is None:
            await _answer(send, 413, f"request bodies are limited to {cap} bytes")
            return
        await self.app(scope, _replay(body, receive), send)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        if scope["path"] in OPEN_PATHS:
            return None
        header = _header(scope, b"authorization") or b""
        scheme, _, presented = header.partition(b" ")
        if scheme.lower() != b"bearer" or not presented.strip():
            return 401, "missing bearer token"
        presented = presented.strip()
        if secrets.compare_digest(presented, self._token):
            return None
        reading_metrics = scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD")
        if reading_metrics and self._metrics_token and secrets.compare_digest(presented, self._metrics_token):
            return None
        if (
            scope["path"] in GATEWAY_PATHS
            and self._gateway_token
            and secrets.compare_digest(presented, self._gateway_token)
        ):
            return None
        return 403, "wrong token"

    async def _read(self, receive: Receive, cap: int) -> bytes | None:
        """The whole body, or None once it passes the cap (nothing more is read then)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # the client went away: the app sees what there was
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"ok": False, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The gateway's door: a client key (gateway.api_keys) on every route but the probes, the metrics token on /metrics,
both checked from the headers before a byte of the body is read, so a keyless megabyte costs the gateway its headers.

A request that passed with a client key is marked in its ASGI scope (`AUTHENTICATED`): only such a client's
x-taoflow-task is honoured. Without client keys the gateway serves anonymous clients (where the settings allow it:
on loopback, or `gateway.allow_anonymous`), and without a metrics token /metrics is open.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

__all__ = ["AUTHENTICATED", "OPEN_PATHS", "ClientGuard"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

#: What Kubernetes' probes ask: open.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
#: The scope key set on a request that presented a valid client key.
AUTHENTICATED = "taoflow.client_authenticated"


class ClientGuard:
    """ASGI middleware: client keys on the API, the metrics token on /metrics; `refused(path)` counts a refusal."""

    def __init__(
        self,
        app: App,
        *,
        keys: tuple[str, ...],
        metrics_token: str | None,
        refused: Callable[[str], None] = lambda path: None,
    ) -> None:
        self.app = app
        self._keys = tuple(k.encode() for k in keys)
        self._metrics = (metrics_token.encode(),) if metrics_token else ()
        self._refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        allowed = self._metrics if scope["path"] == "/metrics" else self._keys
        if allowed:
            refusal = _refusal(scope, allowed)
            if refusal is not None:
                self._refused(scope["path"])
                await _answer(send, *refusal)
                return
            if allowed is self._keys:
                scope[AUTHENTICATED] = True
        await self.app(scope, receive, send)


def _refusal(scope: Scope, allowed: tuple[bytes, ...]) -> tuple[int, str] | None:
    header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    scheme, _, presented = header.partition(b" ")
    presented = presented.strip()
    if scheme.lower() != b"bearer" or not presented:
        return 401, "missing bearer token (Authorization: Bearer <key>)"
    # Every key compared (constant time each): which one matched, or how far, says nothing.
    if not any([secrets.compare_digest(presented, key) for key in allowed]):
        return 403, "wrong key"
    return None


async def _answer(send: Send, status: int, message: str) -> None:
    """An OpenAI-shaped error; the connection is closed, so the body the client may still be sending is not read."""
    kind = "authentication_error" if status == 401 else "permission_error"
    body = orjson.dumps({"error": {"message": message, "type": kind, "code": status}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

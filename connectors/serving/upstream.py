"""The gateway's HTTP side towards replicas and the daemon (async, pooled): open a request, stream the answer.

Failures are sorted by what a proxy may do about them: `Refused` (no connection was made, nothing was
sent: safe to try another replica), `Timeout` and `Broken` (the replica may have started work: not
retried).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

__all__ = ["Broken", "Refused", "Timeout", "Upstream", "UpstreamAnswer"]


class Refused(Exception):
    """The connection was refused or could not be made in time: nothing reached the replica."""


class Timeout(Exception):
    """The replica took longer than allowed."""


class Broken(Exception):
    """The exchange failed after the request was sent."""


@contextmanager
def _sorted_failures(*, connecting: bool) -> Iterator[None]:
    """httpx's failures as Refused, Timeout or Broken. While `connecting`, a connection that could not be made
    (refused, or not made in time) is Refused: nothing reached the replica."""
    try:
        yield
    except httpx.HTTPError as exc:
        message = str(exc) or type(exc).__name__
        unmade = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        if connecting and unmade:
            raise Refused(message) from None
        if isinstance(exc, httpx.TimeoutException):
            raise Timeout(message) from None
        raise Broken(message) from None


class UpstreamAnswer:
    """A replica's answer, its body still to be read (as it arrives)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.headers: dict[str, str] = dict(response.headers)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, bytes unchanged (no decoding)."""
        with _sorted_failures(connecting=False):
            async for chunk in self._response.aiter_raw():
                yield chunk

    async def read(self, limit: int) -> bytes:
        body = bytearray()
        async for chunk in self.chunks():
            body += chunk[: max(0, limit - len(body))]
        return bytes(body)

    async def close(self) -> None:
        await self._response.aclose()


class Upstream:
    def __init__(self, *, connect_timeout_s: float, timeout_s: float, max_connections: int) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s, pool=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def open(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamAnswer:
        """POST `body` to `url` and return once the answer's headers are in."""
        request = self._client.build_request("POST", url, content=body, headers=dict(headers))
        with _sorted_failures(connecting=True):
            return UpstreamAnswer(await self._client.send(request, stream=True))

    async def get_json(self, url: str, *, headers: Mapping[str, str], timeout_s: float, limit: int) -> tuple[int, Any]:
        """GET a small JSON document: (status, decoded body or None). Raises Refused, Timeout or Broken."""
        return await self._json("GET", url, None, headers, timeout_s, limit)

    async def post_json(
        self, url: str, payload: Any, *, headers: Mapping[str, str], timeout_s: float, limit: int
    ) -> tuple[int, Any]:
        return await self._json("POST", url, payload, headers, timeout_s, limit)

    async def _json(
        self, method: str, url: str, payload: Any, headers: Mapping[str, str], timeout_s: float, limit: int
    ) -> tuple[int, Any]:
        with _sorted_failures(connecting=True):
            async with self._client.stream(
                method, url, json=payload, headers=dict(headers), timeout=timeout_s
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        return response.status_code, None
        try:
            return response.status_code, json.loads(body)
        except ValueError:
            return response.status_code, None

    async def close(self) -> None:
        await self._client.aclose()

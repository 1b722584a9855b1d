"""One exchange as the gateway relays it: the client's request (frozen once read) and each try on a replica."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from taoflow.connectors.serving.upstream import UpstreamAnswer
from taoflow.daemon.gateway.routing import Choice

__all__ = ["Attempt", "Exchange"]


@dataclass(frozen=True)
class Exchange:
    """One client request, as the gateway knows it before a replica answers."""

    request_id: str
    endpoint: str  # chat, completions, responses or messages (proxy.ENDPOINTS)
    path: str
    model: str  # the name the client asked for
    task: str
    payload: dict[str, Any]
    body: bytes
    headers: dict[str, str]  # what goes to the replica
    started: float  # monotonic
    wall: float  # Unix time

    def body_for(self, choice: Choice) -> bytes:
        """The body a replica gets: the client's own, with the model name of the version it serves."""
        return self.body if choice.name == self.model else orjson.dumps({**self.payload, "model": choice.name})


@dataclass(frozen=True)
class Attempt:
    """One try of an exchange: the replica and version chosen, when the request went, what came back."""

    choice: Choice
    sent_at: float
    upstream: UpstreamAnswer

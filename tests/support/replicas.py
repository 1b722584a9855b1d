"""A stand-in for a vLLM replica that fails on demand, for the gateway's fast tests (tests/daemon/gateway/).

Real vLLM servers serve the gateway's end-to-end tests (tests/e2e/test_gateway.py); what they cannot be made to do
on demand is what this one does: list a version it no longer serves (a poll older than an unload), cut a stream
mid-answer, or vanish between two polls. It speaks the part of the OpenAI API the gateway relays, over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.ports import free_port, wait_for_port

__all__ = ["StandInReplica"]


@dataclass
class StandInReplica:
    """`serves`: the names it answers for; `lists`: the names its /v1/models shows (default: what it serves);
    `cut_streams`: a streamed answer stops after its first chunk, the connection dropped; `delay_s`: every answer
    (a refusal too) comes this much later."""

    serves: set[str]
    lists: set[str] | None = None
    cut_streams: bool = False
    delay_s: float = 0.0
    port: int = field(default_factory=free_port)
    asked: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)  # each request's Authorization header

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> StandInReplica:
        import uvicorn

        app = Starlette(
            routes=[
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _models(self, request: Request) -> Response:
        names = sorted(self.serves if self.lists is None else self.lists)
        return JSONResponse({"object": "list", "data": [{"id": n, "object": "model"} for n in names]})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.asked.append(body)
        self.authorizations.append(request.headers.get("authorization"))
        await asyncio.sleep(self.delay_s)
        model = body.get("model")
        if model not in self.serves:
            return JSONResponse({"error": {"message": f"The model `{model}` does not exist.", "code": 404}}, 404)
        answer = f"{model} at {self.port} says 42"
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                    ],
                }
            )
        return StreamingResponse(self._events(model, answer), media_type="text/event-stream")

    async def _events(self, model: str, answer: str) -> AsyncIterator[bytes]:
        for i, word in enumerate(answer.split(" ")):
            piece = word if i == 0 else " " + word
            event = {"id": "chatcmpl-1", "model": model, "choices": [{"index": 0, "delta": {"content": piece}}]}
            yield f"data: {json.dumps(event)}\n\n".encode()
            if self.cut_streams:
                raise ConnectionResetError("the replica died mid-answer")
        done = {"id": "chatcmpl-1", "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode()

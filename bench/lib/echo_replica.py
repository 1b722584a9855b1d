"""A replica that answers every chat completion at once with a short fixed answer, whatever the prompt's size: for
the benchmarks that measure the gateway's own cost, where a model's time would only hide it.

    python -m bench.lib.echo_replica --port 8001 --model base
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["app"]


def app(model: str) -> Starlette:
    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": model, "object": "model"}]})

    async def chat(request: Request) -> Response:
        await request.body()
        message = {"role": "assistant", "content": "12 + 30 = 42"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return JSONResponse({"id": "chatcmpl-1", "object": "chat.completion", "model": model, "choices": [choice]})

    return Starlette(
        routes=[Route("/v1/models", models, methods=["GET"]), Route("/v1/chat/completions", chat, methods=["POST"])]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="base")
    args = parser.parse_args()
    uvicorn.run(app(args.model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

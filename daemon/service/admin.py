"""The admin HTTP API (ASGI): status, pause/resume, trigger, promote/rollback, policy dry-run, erasures, metrics.

Every route but /healthz and /readyz requires `Authorization: Bearer <token>`: none or a
malformed header is 401, a wrong token 403 (compared in constant time; never logged).
Bodies are validated: a bad one is 422 with the offending field and a message. The
OpenAPI schema is served at /openapi.json (behind the token too).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from taoflow.connectors.errors import (
    Busy,
    DeployError,
    ErasureIncomplete,
    InvalidRequest,
    RegistryError,
    RoundError,
    TaoflowError,
    UnknownVersion,
)
from taoflow.daemon.service.guard import TokenGuard
from taoflow.policies.retrain import RetrainDecision

__all__ = ["AdminBackend", "Change", "create_app"]

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TASK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


@dataclass(frozen=True)
class Change:
    """The outcome of a promote or rollback: done now, or accepted as a recorded deploy."""

    accepted: bool
    detail: str


class AdminBackend(Protocol):
    """What the API asks of the daemon. Refusals are errors: UnknownVersion (404), InvalidRequest
    (422), Busy, RegistryError, DeployError or RoundError (409)."""

    def readiness(self) -> tuple[bool, dict[str, bool]]: ...

    def status(self) -> dict[str, Any]: ...

    def dry_run(self) -> RetrainDecision: ...

    def pause(self, reason: str) -> None: ...

    def resume(self) -> None: ...

    def trigger(self, *, tasks: Sequence[str], max_prompts: int | None, reason: str) -> None: ...

    def promote(self, version: str, *, reason: str) -> Change: ...

    def rollback(self, to: str | None, *, reason: str) -> Change: ...

    def adapters(self) -> list[dict[str, Any]]: ...

    def fleet_status(self) -> dict[str, Any]: ...

    def forget(
        self,
        *,
        request_ids: Sequence[str],
        texts: Sequence[str],
        reason: str,
        limit: int,
        max_share: float,
        dry_run: bool,
    ) -> dict[str, int]: ...

    def erasures(self, *, limit: int) -> dict[str, Any]: ...

    def routes(self) -> dict[str, Any]: ...

    def gateway_report(self, gateway: str, *, generation: int, inflight: dict[str, int]) -> dict[str, Any]: ...

    def shadow_pairs(self, gateway: str, pairs: list[dict[str, Any]]) -> dict[str, int]: ...

    def log_error(self, path: str, exc: Exception) -> None: ...


#: Refusals and the status they answer with (the most specific class wins).
REFUSALS: dict[type[TaoflowError], int] = {
    UnknownVersion: 404,
    InvalidRequest: 422,
    Busy: 409,
    RegistryError: 409,
    DeployError: 409,
    RoundError: 409,
    ErasureIncomplete: 500,
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PauseBody(_Body):
    reason: str = Field("paused through the admin API", max_length=500)


class TriggerBody(_Body):
    reason: str = Field("triggered through the admin API", max_length=500)
    tasks: list[Annotated[str, Field(pattern=TASK_PATTERN)]] = Field(default_factory=list, max_length=100)
    max_prompts: int | None = Field(None, ge=1, le=1_000_000)


class PromoteBody(_Body):
    version: str = Field(pattern=VERSION_PATTERN)
    reason: str = Field("promoted through the admin API", max_length=500)


class RollbackBody(_Body):
    to: str | None = Field(None, pattern=VERSION_PATTERN)
    reason: str = Field("rolled back through the admin API", max_length=500)


class ForgetBody(_Body):
    """An erasure request: the request ids, and texts whose prompts are erased (each at least 8 characters)."""

    request_ids: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=1000
    )
    texts: list[Annotated[str, Field(min_length=8, max_length=2000)]] = Field(default_factory=list, max_length=20)
    reason: str = Field(min_length=1, max_length=500)
    limit: int = Field(1000, ge=1, le=100_000)
    max_share: float = Field(0.25, gt=0.0, le=1.0)
    dry_run: bool = False


#: The largest integer a state database column holds (a larger one is refused, not an error of ours).
SQLITE_MAX_INT = 2**63 - 1


class ShadowPair(_Body):
    """One mirrored request: the champion's and the candidate's exchange, as the gateway captured them."""

    deploy: int = Field(ge=1, le=SQLITE_MAX_INT)
    request_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    champion: dict[str, Any]
    candidate: dict[str, Any]


class ShadowPairs(_Body):
    gateway: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    pairs: list[ShadowPair] = Field(max_length=64)


class GatewayReport(_Body):
    """What a gateway applies: the route generation, and its requests in flight per served (version) name."""

    gateway: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    generation: int = Field(ge=0, le=SQLITE_MAX_INT)
    inflight: dict[Annotated[str, Field(max_length=256)], Annotated[int, Field(ge=0, le=SQLITE_MAX_INT)]] = Field(
        default_factory=dict, max_length=1000
    )


class Erased(BaseModel):
    ok: bool
    dry_run: bool
    deleted: int
    trained_on: int
    dead_letters: int
    kept_out: int


class Decision(BaseModel):
    trigger: bool
    rule: str
    reason: str
    tasks: list[str]
    max_prompts: int | None
    next_check_at: float | None
    alert: str | None


class Outcome(BaseModel):
    ok: bool
    detail: str


# Module level: FastAPI resolves the (string) annotations of the routes in this module's namespace.
_bearer = HTTPBearer(auto_error=False, description="The daemon's admin token (daemon.admin_token).")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def create_app(
    backend: AdminBackend,
    *,
    token: str,
    metrics: CollectorRegistry,
    metrics_token: str | None = None,
    gateway_token: str | None = None,
) -> FastAPI:
    """The API behind a `TokenGuard` (the token is checked before any body is read; bodies are capped)."""
    app = FastAPI(
        title="taoflow admin API",
        version="1",
        description="Bearer token required on every route but /healthz and /readyz.",
        openapi_url=None,  # served below, behind the token
        docs_url=None,
        redoc_url=None,
    )

    app.add_middleware(TokenGuard, token=token, metrics_token=metrics_token, gateway_token=gateway_token)

    def authorized(credentials: Credentials) -> None:
        _check(credentials, (token,))

    def reader(credentials: Credentials) -> None:
        _check(credentials, (token, metrics_token) if metrics_token else (token,))

    def gateway(credentials: Credentials) -> None:
        _check(credentials, (token, gateway_token) if gateway_token else (token,))

    guard = [Depends(authorized)]
    refused = {"model": Outcome}

    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], responses={503: {"description": "not ready"}})
    def readyz() -> JSONResponse:
        ready, tasks = backend.readiness()
        return JSONResponse({"ready": ready, "tasks": tasks}, status_code=200 if ready else 503)

    @app.get("/openapi.json", dependencies=guard, include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/metrics", dependencies=[Depends(reader)], tags=["observability"], response_class=Response)
    def metrics_text() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/status", dependencies=guard, tags=["status"])
    def status() -> dict[str, Any]:
        return backend.status()

    @app.get("/v1/policy/dry-run", dependencies=guard, tags=["policy"])
    def dry_run() -> Decision:
        return _decision(backend.dry_run())

    @app.post("/v1/pause", dependencies=guard, tags=["control"])
    def pause(body: PauseBody) -> Outcome:
        backend.pause(body.reason)
        return Outcome(ok=True, detail="paused: no automatic rounds until resumed")

    @app.post("/v1/resume", dependencies=guard, tags=["control"])
    def resume() -> Outcome:
        backend.resume()
        return Outcome(ok=True, detail="resumed; the gate-rejection back-off is cleared")

    @app.post(
        "/v1/trigger", dependencies=guard, tags=["control"], status_code=202, responses={409: refused, 422: refused}
    )
    def trigger(body: TriggerBody) -> Outcome:
        backend.trigger(tasks=body.tasks, max_prompts=body.max_prompts, reason=body.reason)
        return Outcome(ok=True, detail="round started")

    @app.post("/v1/adapters/promote", dependencies=guard, tags=["adapters"], responses={404: refused, 409: refused})
    def promote(body: PromoteBody) -> Any:
        return _changed(backend.promote(body.version, reason=body.reason))

    @app.post("/v1/adapters/rollback", dependencies=guard, tags=["adapters"], responses={404: refused, 409: refused})
    def rollback(body: RollbackBody) -> Any:
        return _changed(backend.rollback(body.to, reason=body.reason))

    @app.get("/v1/adapters", dependencies=guard, tags=["adapters"])
    def adapters() -> list[dict[str, Any]]:
        return backend.adapters()

    @app.get("/v1/fleet", dependencies=guard, tags=["fleet"])
    def fleet() -> dict[str, Any]:
        """Each replica's adapters and drift from the champion (live), and the recent deploys."""
        return backend.fleet_status()

    @app.post("/v1/erasures", dependencies=guard, tags=["erasures"], responses={422: refused})
    def forget(body: ForgetBody) -> Erased:
        """Erase prompts at a data subject's request (what `taoflow forget` does); nothing logs the texts."""
        if not body.request_ids and not body.texts:
            raise InvalidRequest("name what to erase: request_ids, texts or both")
        counts = backend.forget(
            request_ids=body.request_ids,
            texts=body.texts,
            reason=body.reason,
            limit=body.limit,
            max_share=body.max_share,
            dry_run=body.dry_run,
        )
        return Erased(ok=True, dry_run=body.dry_run, **counts)

    @app.get("/v1/erasures", dependencies=guard, tags=["erasures"])
    def erasures(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
        """Counts, the adapters trained on erased prompts, and the newest such prompts (`buffer --erased`)."""
        return backend.erasures(limit=limit)

    @app.get("/v1/routes", dependencies=[Depends(gateway)], tags=["routing"])
    def routes() -> dict[str, Any]:
        """The route table of `fleet.routing: gateway`: the stable name's versions and weights, and its generation."""
        return backend.routes()

    @app.post("/v1/routes/report", dependencies=[Depends(gateway)], tags=["routing"])
    def gateway_report(body: GatewayReport) -> dict[str, Any]:
        """A gateway's report (the generation it applies, its requests in flight); answers the route table."""
        return backend.gateway_report(body.gateway, generation=body.generation, inflight=body.inflight)

    @app.post("/v1/shadow/pairs", dependencies=[Depends(gateway)], tags=["routing"])
    def shadow_pairs(body: ShadowPairs) -> dict[str, int]:
        """A gateway's pairs of answers to mirrored requests (shadow deploys): counts kept and refused."""
        return backend.shadow_pairs(body.gateway, [p.model_dump() for p in body.pairs])

    for error, code in REFUSALS.items():
        app.add_exception_handler(error, _refusal(code))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        backend.log_error(request.url.path, exc)
        return JSONResponse({"ok": False, "detail": f"internal error at {time.time():.0f}; see the daemon log"}, 500)

    return app


def _check(credentials: HTTPAuthorizationCredentials | None, allowed: Sequence[str]) -> None:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    if not any(secrets.compare_digest(credentials.credentials.encode(), t.encode()) for t in allowed):
        raise HTTPException(403, "wrong token")


def _refusal(code: int) -> Any:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(Outcome(ok=False, detail=str(exc)).model_dump(), status_code=code)

    return handler


def _changed(change: Change) -> JSONResponse:
    return JSONResponse(
        Outcome(ok=True, detail=change.detail).model_dump(), status_code=202 if change.accepted else 200
    )


def _decision(decision: RetrainDecision) -> Decision:
    return Decision(
        trigger=decision.trigger,
        rule=decision.rule,
        reason=decision.reason,
        tasks=list(decision.tasks),
        max_prompts=decision.max_prompts,
        next_check_at=decision.next_check_at,
        alert=decision.alert,
    )

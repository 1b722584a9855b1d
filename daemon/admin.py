"""The admin HTTP API (ASGI): status, pause/resume, trigger, promote/rollback, policy dry-run, metrics.

Every route but /healthz and /readyz requires `Authorization: Bearer <token>`: none or a
malformed header is 401, a wrong token 403 (compared in constant time; never logged).
Bodies are validated: a bad one is 422 with the offending field and a message. The
OpenAPI schema is served at /openapi.json (behind the token too).
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from taoflow.connectors.errors import DeployError, RegistryError

if TYPE_CHECKING:
    from taoflow.daemon.registry import Registry
    from taoflow.daemon.service import Service

__all__ = ["create_app"]

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TASK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


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


def create_app(service: Service, *, token: str) -> FastAPI:
    app = FastAPI(
        title="taoflow admin API",
        version="1",
        description="Bearer token required on every route but /healthz and /readyz.",
        openapi_url=None,  # served below, behind the token
        docs_url=None,
        redoc_url=None,
    )

    def authorized(credentials: Credentials) -> None:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(403, "wrong token")

    guard = [Depends(authorized)]

    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], responses={503: {"description": "not ready"}})
    def readyz() -> JSONResponse:
        tasks = service.supervisor.running()
        ready = service.ready.is_set() and all(tasks.values()) and service.database_ok()
        return JSONResponse({"ready": ready, "tasks": tasks}, status_code=200 if ready else 503)

    @app.get("/openapi.json", dependencies=guard, include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.get("/metrics", dependencies=guard, tags=["observability"], response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/status", dependencies=guard, tags=["status"])
    def status() -> dict[str, Any]:
        return service.status()

    @app.get("/v1/policy/dry-run", dependencies=guard, tags=["policy"])
    def dry_run() -> Decision:
        return _decision(service.flywheel.dry_run())

    @app.post("/v1/pause", dependencies=guard, tags=["control"])
    def pause(body: PauseBody) -> Outcome:
        service.flywheel.controls.set_paused(True, reason=body.reason)
        return Outcome(ok=True, detail="paused: no automatic rounds until resumed")

    @app.post("/v1/resume", dependencies=guard, tags=["control"])
    def resume() -> Outcome:
        service.flywheel.controls.set_paused(False, reason="resumed")
        service.flywheel.controls.reset_rejections()
        return Outcome(ok=True, detail="resumed; the gate-rejection back-off is cleared")

    @app.post("/v1/trigger", dependencies=guard, tags=["control"], status_code=202, responses={409: {"model": Outcome}})
    def trigger(body: TriggerBody) -> Any:
        if not service.flywheel.trigger(tasks=body.tasks, max_prompts=body.max_prompts, reason=body.reason):
            return _refused(409, "a round is already running")
        return Outcome(ok=True, detail="round started")

    @app.post(
        "/v1/adapters/promote",
        dependencies=guard,
        tags=["adapters"],
        responses={404: {"model": Outcome}, 409: {"model": Outcome}},
    )
    def promote(body: PromoteBody) -> Any:
        registry = service.state.registry
        if (unknown := _unknown(registry, body.version)) is not None:
            return unknown
        try:
            if service.fleet_loop is not None:  # through the fleet: canary, smoke, waves, then the registry
                record = service.fleet_loop.request_promote(body.version, reason=body.reason)
                return _accepted(f"deploy {record.id} rolls {body.version} out to the fleet")
            registry.promote(body.version, reason=body.reason)
        except (RegistryError, DeployError) as exc:
            return _refused(409, str(exc))
        return Outcome(ok=True, detail=f"{body.version} is the champion")

    @app.post(
        "/v1/adapters/rollback",
        dependencies=guard,
        tags=["adapters"],
        responses={404: {"model": Outcome}, 409: {"model": Outcome}},
    )
    def rollback(body: RollbackBody) -> Any:
        registry = service.state.registry
        if body.to is not None and (unknown := _unknown(registry, body.to)) is not None:
            return unknown
        try:
            if service.fleet_loop is not None:
                record = service.fleet_loop.request_rollback(to=body.to, reason=body.reason)
                return _accepted(f"deploy {record.id} rolls {record.version} back out to the fleet")
            version = registry.rollback(service.model, to=body.to, reason=body.reason)
        except (RegistryError, DeployError) as exc:
            return _refused(409, str(exc))
        return Outcome(ok=True, detail=f"{version.version} is the champion again")

    @app.get("/v1/adapters", dependencies=guard, tags=["adapters"])
    def adapters() -> list[dict[str, Any]]:
        champion = service.state.registry.alias(service.model, "champion")
        return [
            {
                "version": v.version,
                "state": v.state,
                "parent": v.parent,
                "champion": v.version == champion,
                "created_at": v.created_at,
                "reason": v.reason,
            }
            for v in service.state.registry.versions(model=service.model)
        ]

    @app.get("/v1/fleet", dependencies=guard, tags=["fleet"])
    def fleet() -> dict[str, Any]:
        """Each replica's adapters and drift from the champion (live), and the recent deploys."""
        return service.fleet_status()

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        service.log_admin_error(request.url.path, exc)
        return JSONResponse({"ok": False, "detail": f"internal error at {time.time():.0f}; see the daemon log"}, 500)

    return app


def _accepted(detail: str) -> JSONResponse:
    return JSONResponse(Outcome(ok=True, detail=detail).model_dump(), status_code=202)


def _refused(status: int, detail: str) -> JSONResponse:
    return JSONResponse(Outcome(ok=False, detail=detail).model_dump(), status_code=status)


def _unknown(registry: Registry, version: str) -> JSONResponse | None:
    """404 for a version the registry does not have."""
    try:
        registry.get(version)
    except RegistryError as exc:
        return _refused(404, str(exc))
    return None


def _decision(decision: Any) -> Decision:
    return Decision(
        trigger=decision.trigger,
        rule=decision.rule,
        reason=decision.reason,
        tasks=list(decision.tasks),
        max_prompts=decision.max_prompts,
        next_check_at=decision.next_check_at,
        alert=decision.alert,
    )

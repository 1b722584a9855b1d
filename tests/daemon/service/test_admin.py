"""The admin API on a real Service (state database, registry, flywheel), through the ASGI app."""

import sys

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.service.admin import create_app
from taoflow.daemon.service.guard import MAX_BODY_BYTES
from taoflow.daemon.service.running import Service
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.routes import RouteStore

TOKEN = "s3cr3t-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OPEN = {"/healthz", "/readyz"}


@pytest.fixture
def service(tmp_path):
    settings = load_settings(
        None,
        storage={"state_dir": str(tmp_path / "state")},
        daemon={"admin_token": TOKEN},
        retrain={"min_new_prompts": 2},
    )
    svc = Service(settings)
    # The round process itself is exercised by the soak test; here a trigger starts a short real process.
    svc.flywheel.launcher._command = [sys.executable, "-c", "import time; time.sleep(0.3)"]
    yield svc
    svc.flywheel.stop_round()
    svc.state.close()


@pytest.fixture
def client(service):
    return TestClient(create_app(service.answers, token=TOKEN, metrics=service.registry))


def protected_routes(app):
    for route in app.routes:
        for method in sorted(getattr(route, "methods", set()) - {"HEAD"}):
            if route.path not in OPEN:
                yield method, route.path


def test_every_route_but_the_probes_needs_the_token(client):
    routes = list(protected_routes(client.app))
    assert {("GET", "/metrics"), ("GET", "/openapi.json"), ("POST", "/v1/trigger")} <= set(routes)
    for method, path in routes:
        missing = client.request(method, path)
        assert missing.status_code == 401, (method, path)
        assert missing.headers["www-authenticate"] == "Bearer"
        assert client.request(method, path, headers={"Authorization": "Basic abc"}).status_code == 401
        assert client.request(method, path, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503  # not started: the supervisor runs no tasks yet


def test_bad_bodies_are_422_with_the_field_and_a_message(client):
    cases = [
        ("/v1/trigger", {"max_prompts": 0}, "max_prompts"),
        ("/v1/trigger", {"tasks": ["../etc"]}, "tasks"),
        ("/v1/trigger", {"surprise": True}, "surprise"),
        ("/v1/adapters/promote", {"version": "../../adapters/x"}, "version"),
        ("/v1/adapters/promote", {}, "version"),
        ("/v1/adapters/rollback", {"to": "a/b"}, "to"),
        ("/v1/pause", {"reason": "x" * 501}, "reason"),
    ]
    for path, body, field in cases:
        response = client.post(path, json=body, headers=AUTH)
        assert response.status_code == 422, (path, body)
        (error,) = response.json()["detail"]
        assert field in error["loc"] and error["msg"], error
    assert client.post("/v1/trigger", content=b"{not json", headers=AUTH).status_code == 422


def test_pause_dry_run_trigger_and_adapters(client, service):
    records = [PromptRecord(f"r{i}", "math", (Message("user", f"What is {i}+1?"),)) for i in range(6)]
    service.state.buffer.add_many([(r, None) for r in records], source="test")
    dry = client.get("/v1/policy/dry-run", headers=AUTH).json()
    assert dry["trigger"] is True and dry["rule"] == "ready"
    assert client.post("/v1/pause", json={"reason": "maintenance"}, headers=AUTH).status_code == 200
    assert client.get("/v1/policy/dry-run", headers=AUTH).json()["rule"] == "paused"
    status = client.get("/v1/status", headers=AUTH).json()
    assert status["paused"] is True and status["pause_reason"] == "maintenance"
    assert status["paused_by"] == "operator" and status["next_trigger"]["reason"].startswith("paused by an operator")
    assert status["buffer"]["total"] == 6
    # A round that could not start is refused up front, naming what the buffer holds; none is started.
    unknown = client.post("/v1/trigger", json={"tasks": ["nope"]}, headers=AUTH)
    assert (
        unknown.status_code == 422 and unknown.json()["detail"] == "unknown task 'nope'; the buffer holds math (4 new)"
    )
    assert client.post("/v1/trigger", json={"max_prompts": 0}, headers=AUTH).status_code == 422
    assert not service.flywheel.launcher.running
    # An operator's trigger runs even while paused, but never beside a running round.
    assert client.post("/v1/trigger", json={}, headers=AUTH).status_code == 202
    assert client.post("/v1/trigger", json={}, headers=AUTH).status_code == 409
    assert client.post("/v1/resume", headers=AUTH).json()["ok"] is True
    assert client.get("/v1/status", headers=AUTH).json()["next_trigger"]["rule"] != "paused"  # not stale
    assert client.post("/v1/adapters/promote", json={"version": "nope-1"}, headers=AUTH).status_code == 404
    assert client.post("/v1/adapters/rollback", json={}, headers=AUTH).status_code == 409
    assert client.get("/v1/adapters", headers=AUTH).json() == []
    metrics = client.get("/metrics", headers=AUTH).text
    assert 'taoflow_buffer_prompts{split="train",task="math"}' in metrics
    assert TOKEN not in metrics and TOKEN not in str(status)


def test_a_trigger_with_nothing_new_to_train_is_refused(client, service):
    assert client.post("/v1/trigger", json={}, headers=AUTH).json()["detail"].startswith("no new training prompts")
    record = PromptRecord("r1", "math", (Message("user", "What is 1+1?"),))
    service.state.buffer.add_many([(record, None)], source="test")
    service.state.buffer.mark_consumed([p.id for p in service.state.buffer.training_prompts(10)], round_id=1)
    refused = client.post("/v1/trigger", json={"tasks": ["math"]}, headers=AUTH)
    assert refused.status_code == 409 and refused.json()["detail"] == "no new training prompts in math (math (0 new))"
    assert not service.flywheel.launcher.running


def test_a_config_pause_is_not_called_an_operators(tmp_path):
    settings = load_settings(
        None, storage={"state_dir": str(tmp_path / "state")}, daemon={"admin_token": TOKEN}, retrain={"paused": True}
    )
    svc = Service(settings)
    try:
        status = (
            TestClient(create_app(svc.answers, token=TOKEN, metrics=svc.registry))
            .get("/v1/status", headers=AUTH)
            .json()
        )
        assert status["paused"] and status["paused_by"] == "config" and status["pause_reason"] is None
        assert (
            status["next_trigger"]["reason"]
            == "paused by the config (retrain.paused: true) (`taoflow resume` to continue)"
        )
    finally:
        svc.state.close()


def test_fuzzed_requests_never_get_a_server_error(service):
    """Requests generated from the served OpenAPI schema (valid and invalid bodies), with the token."""
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", create_app(service.answers, token=TOKEN, metrics=service.registry), headers=AUTH
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            response = case.call(headers=AUTH)
            not_ready = case.path == "/readyz" and response.status_code == 503  # documented: nothing runs here
            assert response.status_code < 500 or not_ready, (case.method, case.path, case.body, response.text)

        fuzz()


def test_with_a_fleet_promote_and_rollback_become_recorded_deploys(tmp_path):
    """With a fleet, the admin API records deploys for the fleet task to carry out (202), and
    /v1/fleet reports each replica; here the one replica is down, as a replica can be."""
    from tests.support.ports import free_port

    settings = load_settings(
        None,
        storage={"state_dir": str(tmp_path / "state")},
        daemon={"admin_token": TOKEN},
        fleet={"replicas": [f"http://127.0.0.1:{free_port()}"], "request_timeout_seconds": 1},
    )
    svc = Service(settings)
    try:
        assert svc.fleet_loop is not None
        assert "--no-promote" in svc.flywheel.launcher._command  # the gate passes, the deploy promotes
        client = TestClient(create_app(svc.answers, token=TOKEN, metrics=svc.registry))
        registry = svc.state.registry
        registry.register(
            version="v1", model="taoflow", parent=None, base_model="b", base_digest="d", uri="file:///x", manifest={}
        )
        registry.transition("v1", "gated", reason="test")
        accepted = client.post("/v1/adapters/promote", json={"version": "v1"}, headers=AUTH)
        assert accepted.status_code == 202 and "deploy 1" in accepted.json()["detail"]
        busy = client.post("/v1/adapters/rollback", json={"to": "v1"}, headers=AUTH)
        assert busy.status_code == 409 and "still running" in busy.json()["detail"]
        assert client.post("/v1/adapters/rollback", json={"to": "nope"}, headers=AUTH).status_code == 404
        fleet = client.get("/v1/fleet", headers=AUTH).json()
        assert fleet["configured"] and list(fleet["replicas"].values()) == [None]
        assert fleet["drift"]["unreachable"] == settings.fleet.replicas
        assert fleet["deploys"][0]["status"] == "running" and fleet["deploys"][0]["version"] == "v1"
        # The fleet task carries it on: the preflight refuses (no such base model here), nothing was served.
        svc.fleet_loop.tick()
        deploy = svc.fleet_loop.deployer.deploys.get(1)
        assert deploy.status == "failed" and registry.get("v1").state == "rejected"
        metrics = client.get("/metrics", headers=AUTH).text
        assert 'taoflow_deploys_total{kind="promote",status="failed",trigger="api"} 1.0' in metrics
        assert 'taoflow_fleet_replicas{state="down"} 1.0' in metrics
    finally:
        svc.state.close()


METRICS_TOKEN = "metrics-only-token-0123456789"


@pytest.fixture
def guarded(service):
    return TestClient(create_app(service.answers, token=TOKEN, metrics=service.registry, metrics_token=METRICS_TOKEN))


def test_the_token_is_checked_before_the_body_is_read(guarded):
    assert guarded.post("/v1/trigger", content=b"{not json").status_code == 401  # not a 422 with parser detail
    assert guarded.post("/v1/trigger", content=b"{not json", headers={"Authorization": "Bearer x"}).status_code == 403
    forged = guarded.post("/v1/pause", content=b"x" * (1 << 20), headers={"Content-Length": str(10**9)})
    assert forged.status_code == 401


def test_bodies_are_capped_declared_or_chunked(guarded):
    too_big = guarded.post("/v1/pause", content=b"x" * (MAX_BODY_BYTES + 1), headers=AUTH)
    assert too_big.status_code == 413 and "limited to" in too_big.json()["detail"]

    def chunks():
        for _ in range(3):
            yield b" " * (MAX_BODY_BYTES // 2)

    assert guarded.post("/v1/pause", content=chunks(), headers=AUTH).status_code == 413
    fine = guarded.post("/v1/pause", json={"reason": "r" * 400}, headers=AUTH)
    assert fine.status_code == 200


def test_the_metrics_token_reads_metrics_and_nothing_else(guarded):
    reader = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    assert guarded.get("/metrics", headers=reader).status_code == 200
    assert guarded.get("/metrics", headers=AUTH).status_code == 200
    assert guarded.get("/v1/status", headers=reader).status_code == 403
    assert guarded.post("/v1/trigger", json={}, headers=reader).status_code == 403
    assert guarded.post("/v1/adapters/rollback", json={}, headers=reader).status_code == 403


def test_erasure_requests_through_the_api(client, service):
    texts = ["my name is Jane Roe and my order is late", "a question about shipping"]
    service.state.buffer.add_many(
        [(PromptRecord(f"r{i}", "t", (Message("user", text),)), None) for i, text in enumerate(texts)], source="s"
    )
    assert client.post("/v1/erasures", json={"reason": "x"}, headers=AUTH).status_code == 422  # names nothing
    short = client.post("/v1/erasures", json={"texts": ["Jane"], "reason": "x"}, headers=AUTH)
    assert short.status_code == 422 and "texts" in short.text
    dry = client.post("/v1/erasures", json={"texts": ["Jane Roe"], "reason": "ticket 7", "dry_run": True}, headers=AUTH)
    assert dry.status_code == 200 and dry.json()["deleted"] == 1 and service.state.buffer.stats().total == 2
    done = client.post(
        "/v1/erasures", json={"texts": ["Jane Roe"], "request_ids": ["r9"], "reason": "t7"}, headers=AUTH
    )
    assert done.json() == {
        "ok": True,
        "dry_run": False,
        "deleted": 1,
        "trained_on": 0,
        "dead_letters": 0,
        "kept_out": 1,
    }
    assert service.state.buffer.stats().total == 1
    listed = client.get("/v1/erasures", headers=AUTH).json()
    assert listed["counts"] == {"trained": 0, "untrained": 2} and listed["trained_on"] == []


def test_the_gateway_token_reads_routes_and_reports_and_nothing_else(service):
    gateway_token = "s3cr3t-gateway-token"
    client = TestClient(create_app(service.answers, token=TOKEN, metrics=service.registry, gateway_token=gateway_token))
    as_gateway = {"Authorization": f"Bearer {gateway_token}"}
    assert client.get("/v1/routes", headers=as_gateway).json() == {"generation": 0, "routes": {}, "shadows": {}}
    report = {"gateway": "gw-1", "generation": 0, "inflight": {"v1": 2}}
    assert client.post("/v1/routes/report", json=report, headers=as_gateway).status_code == 200
    assert client.get("/v1/routes", headers=AUTH).status_code == 200  # the admin token may too
    for method, path in protected_routes(client.app):
        if not path.startswith(("/v1/routes", "/v1/shadow/pairs")):
            assert client.request(method, path, headers=as_gateway).status_code == 403, (method, path)
    bad = [
        {"gateway": "../x", "generation": 0},
        {"gateway": "gw", "generation": -1},
        {"gateway": "gw", "generation": 0, "inflight": {"v1": -1}},
    ]
    for body in bad:
        assert client.post("/v1/routes/report", json=body, headers=as_gateway).status_code == 422, body
    gateways = RouteStore(service.state.db).gateways(stale_after=60)
    assert gateways == {"gw-1": {"generation": 0, "inflight": {"v1": 2}}}


def test_shadow_pairs_are_kept_only_for_a_shadowing_deploy_up_to_its_cap(service):
    from taoflow.daemon.store.shadows import Mirror, ShadowStore

    gateway_token = "s3cr3t-gateway-token"
    client = TestClient(create_app(service.answers, token=TOKEN, metrics=service.registry, gateway_token=gateway_token))
    as_gateway = {"Authorization": f"Bearer {gateway_token}"}
    row = {"databricks_request_id": "r", "request": {"messages": [{"role": "user", "content": "hi"}]}}

    def post(deploy: int, ids: range) -> dict:
        pairs = [{"deploy": deploy, "request_id": f"r{i}", "champion": row, "candidate": row} for i in ids]
        answer = client.post("/v1/shadow/pairs", json={"gateway": "gw-1", "pairs": pairs}, headers=as_gateway)
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert post(7, range(3)) == {"kept": 0, "not_shadowing": 3, "full": 0, "duplicate": 0}
    shadows = ShadowStore(service.state.db)
    generation = shadows.start("m", Mirror("v2", 7, 1.0, 4, 0.5, 64, 30.0))
    table = client.get("/v1/routes", headers=as_gateway).json()
    assert table["generation"] == generation and table["shadows"]["m"]["version"] == "v2"
    cap = service.state.settings.fleet.shadow.max_pairs
    assert post(7, range(2)) == {"kept": 2, "not_shadowing": 0, "full": 0, "duplicate": 0}
    assert post(7, range(2)) == {"kept": 0, "not_shadowing": 0, "full": 0, "duplicate": 2}
    counts = {"kept": 0, "full": 0}
    for start in range(2, cap + 40, 60):
        got = post(7, range(start, start + 60))
        counts = {k: counts[k] + got[k] for k in counts}
    assert shadows.count(7) == cap and counts["full"] > 0
    assert shadows.stop("m", deploy=7) is not None and post(7, range(900, 901))["not_shadowing"] == 1
    bad = {"gateway": "gw-1", "pairs": [{"deploy": 7, "request_id": "../x", "champion": row, "candidate": row}]}
    assert client.post("/v1/shadow/pairs", json=bad, headers=as_gateway).status_code == 422
    huge = b"x" * (11 << 20)
    assert client.post("/v1/shadow/pairs", content=huge, headers=as_gateway).status_code == 413
    assert client.post("/v1/shadow/pairs", json=bad, headers={"Authorization": "Bearer wrong"}).status_code == 403


def test_the_gateway_token_cannot_grow_the_report_table_without_bound(service, monkeypatch):
    """Finding: a gateway-token holder could add report rows without bound (a row per invented gateway name)."""
    from taoflow.daemon.store import routes

    monkeypatch.setattr(routes, "MAX_GATEWAYS", 3)
    gateway_token = "s3cr3t-gateway-token"
    client = TestClient(create_app(service.answers, token=TOKEN, metrics=service.registry, gateway_token=gateway_token))
    as_gateway = {"Authorization": f"Bearer {gateway_token}"}
    answers = [
        client.post("/v1/routes/report", json={"gateway": f"gw-{i}", "generation": 0}, headers=as_gateway).status_code
        for i in range(5)
    ]
    assert answers == [200, 200, 200, 422, 422]
    again = client.post("/v1/routes/report", json={"gateway": "gw-1", "generation": 0}, headers=as_gateway)
    assert again.status_code == 200  # a known gateway keeps reporting
    service.state.db.query("UPDATE gateway_reports SET seen_at = seen_at - 7200 WHERE gateway = 'gw-0'")
    late = client.post("/v1/routes/report", json={"gateway": "gw-9", "generation": 0}, headers=as_gateway)
    assert late.status_code == 200  # gw-0, silent for two hours, was forgotten
    assert set(RouteStore(service.state.db).gateways(stale_after=60)) == {"gw-1", "gw-2", "gw-9"}

"""The gateway's proxy, fast: the real gateway app over real HTTP in front of stand-in replicas that fail on demand
(tests/support/replicas.py). Real vLLM replicas, the daemon's route table and a durable sink are in
tests/e2e/test_gateway.py; here is what only a stand-in can be made to do, and the paths a request can take."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest

from taoflow.connectors.errors import ConfigurationError
from taoflow.daemon.gateway.app import Gateway, server_config
from taoflow.daemon.gateway.metrics import DROP_REASONS
from taoflow.daemon.service.admin import create_app
from taoflow.daemon.service.running import Service
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.routes import RouteStore
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import poll_until
from tests.support.replicas import StandInReplica


@contextmanager
def serving(app, port: int, *, config=None):
    """An ASGI app (or a uvicorn `config`) served on a loopback port by uvicorn in a thread, until the block ends."""
    import uvicorn

    server = uvicorn.Server(config or uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def daemon_admin(tmp_path):
    """The daemon's real admin API on its real state, answering the gateway's route reports with GATEWAY_TOKEN."""
    settings = load_settings(
        None, storage={"state_dir": str(tmp_path / "state")}, daemon={"admin_token": "an-admin-token-of-32-chars-or-so"}
    )
    service = Service(settings)
    try:
        app = create_app(
            service.answers, token="an-admin-token-of-32-chars-or-so", metrics=service.registry, gateway_token=GATEWAY
        )
        with serving(app, free_port()) as url:
            yield service, url
    finally:
        service.state.close()


GATEWAY = "a-gateway-token-of-32-characters"
KEY = "a-client-key-of-32-characters-ok"


@contextmanager
def gateway(tmp_path, replicas, *, routes=None, daemon=None, ingest=None, fleet_api_key=None, **gateway_settings):
    """`taoflow gateway`'s app on a loopback port, capturing to JSON lines; `routes`: the last route table it read
    (its cache), the daemon being away unless `daemon` (its settings) says where it is."""
    spool = tmp_path / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    if routes is not None:
        (spool / "routes.json").write_text(json.dumps({"generation": 1, "routes": routes}))
    settings = load_settings(
        None,
        fleet={"replicas": [r.url for r in replicas], "api_key": fleet_api_key},
        daemon=daemon or {"admin_port": free_port()},  # nobody listens: the routes stay the cached ones
        ingest=ingest or {},
        gateway={
            "port": free_port(),
            "replicas_poll_seconds": 3600,  # one look at start: a replica gone after it is found by its refusal
            "routes_poll_seconds": 3600,
            "max_body_bytes": 4096,
            "capture": {"sink": "jsonl", "jsonl_dir": str(tmp_path / "captured"), "spool_dir": str(spool)},
            **gateway_settings,
        },
    )
    app = Gateway(settings)
    with serving(None, settings.gateway.port, config=server_config(app)) as url:  # as `taoflow gateway` serves
        ready = lambda: httpx.get(url + "/readyz").status_code == 200  # noqa: E731
        poll_until(ready, deadline_s=10, message="the gateway ready")
        yield app, url


def chat(
    url: str, model: str, *, stream: bool = False, task: str | None = None, key: str | None = None
) -> httpx.Response:
    headers = {"x-taoflow-task": task} if task else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    body = {"model": model, "messages": [{"role": "user", "content": "What is 12 + 30?"}], "stream": stream}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def count(app: Gateway, name: str, labels: dict[str, str] | None = None) -> float:
    return app.registry.get_sample_value(name, labels or {}) or 0.0


def captured(tmp_path) -> list[dict]:
    return [
        json.loads(line) for f in sorted((tmp_path / "captured").glob("*.jsonl")) for line in f.read_text().splitlines()
    ]


def test_answers_pass_through_unchanged_and_each_exchange_is_captured_whole(tmp_path):
    with (
        StandInReplica({"base"}) as replica,
        gateway(tmp_path, [replica], api_keys=KEY, ingest={"tasks": ["support"]}) as (app, url),
    ):
        plain = chat(url, "base", task="support", key=KEY)
        streamed = chat(url, "base", stream=True, key=KEY)
        assert plain.status_code == streamed.status_code == 200
        assert plain.json()["choices"][0]["message"]["content"] == f"base at {replica.port} says 42"
        assert streamed.text.rstrip().endswith("data: [DONE]") and streamed.headers["x-taoflow-served"] == "base"
        poll_until(lambda: len(captured(tmp_path)) == 2, deadline_s=10, message="both exchanges captured")
    records = {r["task"]: r for r in captured(tmp_path)}
    assert set(records) == {"support", "base"}  # a client's task label, or the model name
    whole = records["base"]["response"]["choices"][0]["message"]["content"]
    assert whole == f"base at {replica.port} says 42"  # the stream, assembled
    assert records["support"]["request_metadata"]["served_version"] == "base"
    assert count(app, "taoflow_gateway_requests_total", {"endpoint": "chat", "code": "2xx"}) == 2


def test_a_routed_name_reaches_the_replica_serving_its_version_under_the_versions_name(tmp_path):
    with (
        StandInReplica({"support-r1"}) as old,
        StandInReplica({"support-r2"}) as new,
        gateway(tmp_path, [old, new], routes={"support": [{"version": "support-r2", "weight": 1.0}]}) as (_, url),
    ):
        answer = chat(url, "support")
        assert answer.status_code == 200 and answer.headers["x-taoflow-served"] == "support-r2"
        assert [a["model"] for a in new.asked] == ["support-r2"] and old.asked == []


def test_a_version_unloaded_since_the_last_poll_is_asked_of_another_replica_before_any_byte(tmp_path):
    routes = {"support": [{"version": "support-r2", "weight": 1.0}]}
    stale = StandInReplica(set(), lists={"support-r2"})  # its /v1/models is older than the unload
    with (
        stale,
        StandInReplica({"support-r2"}) as serving,
        gateway(tmp_path, [stale, serving], routes=routes) as (app, url),
    ):
        answers = [chat(url, "support") for _ in range(12)]
        assert [a.status_code for a in answers] == [200] * 12
        assert all(a.json()["choices"][0]["message"]["content"].endswith(f"{serving.port} says 42") for a in answers)
        # The stale replica answered 404 once, was forgotten for that version, and never asked again.
        assert len(stale.asked) == 1 and count(app, "taoflow_gateway_retries_total", {"reason": "gone"}) == 1


def test_a_replica_gone_since_the_last_poll_is_refused_and_the_request_retried_elsewhere(tmp_path):
    with (
        StandInReplica({"base"}) as alive,
        StandInReplica({"base"}) as doomed,
        gateway(tmp_path, [alive, doomed]) as (app, url),
    ):
        doomed.stop()  # the gateway saw it at start; it is gone now
        answers = [chat(url, "base") for _ in range(20)]
        assert [a.status_code for a in answers] == [200] * 20
        assert count(app, "taoflow_gateway_retries_total", {"reason": "refused"}) == 1  # then known to be down


def test_a_stream_the_replica_cuts_is_counted_as_failed_and_not_captured(tmp_path):
    with StandInReplica({"base"}, cut_streams=True) as replica, gateway(tmp_path, [replica]) as (app, url):
        answer = chat(url, "base", stream=True)
        # The status went before the replica failed: the client gets what came, without the stream's end.
        assert answer.status_code == 200 and "data: [DONE]" not in answer.text and '"says"' not in answer.text
        poll_until(
            lambda: count(app, "taoflow_gateway_requests_total", {"endpoint": "chat", "code": "5xx"}) == 1,
            deadline_s=10,
            message="the cut answer counted",
        )
        assert captured(tmp_path) == []


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"x" * 5000, 413, "request bodies are limited to 4096 bytes"),
        (b"{not json", 400, "the body must be a JSON object with a model name"),
        (b'{"messages": []}', 400, "the body must be a JSON object with a model name"),
    ],
)
def test_requests_it_cannot_relay_are_refused_with_a_reason(tmp_path, body, status, message):
    with StandInReplica({"base"}) as replica, gateway(tmp_path, [replica]) as (_, url):
        answer = httpx.post(url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        assert (answer.status_code, answer.json()["error"]["message"]) == (status, message)
        assert replica.asked == [] and answer.headers["x-request-id"]


def test_a_name_no_replica_serves_is_answered_by_a_replica_or_refused_when_none_is_healthy(tmp_path):
    with StandInReplica({"base"}) as replica, gateway(tmp_path, [replica]) as (_, url):
        unknown = chat(url, "no-such-model")
        assert unknown.status_code == 404 and "does not exist" in unknown.json()["error"]["message"]
        replica.stop()
        assert chat(url, "base").status_code == 502  # it was the only one, and it refused


def test_a_flood_of_long_unknown_model_names_leaves_the_route_reports_accepted(tmp_path):
    """Finding: in-flight counts keyed by the client's model name made every report a 422 (keys over 256
    characters), froze the gateway's view in the daemon, and a deploy stopped waiting for it."""
    long = "m" * 300
    with (
        daemon_admin(tmp_path) as (service, daemon_url),
        StandInReplica({"base"}, delay_s=3.0) as replica,
        gateway(
            tmp_path,
            [replica],
            daemon={"gateway_token": GATEWAY},
            id="gw-flooded",
            daemon_url=daemon_url,
            routes_poll_seconds=0.1,
        ) as (app, url),
        ThreadPoolExecutor(16) as pool,
    ):
        answers = [pool.submit(chat, url, long) for _ in range(16)]
        flooded = lambda: app.router.replicas[replica.url].outstanding == 16  # noqa: E731
        poll_until(flooded, deadline_s=10, message="16 requests held by the replica")
        time.sleep(1.0)  # ten reports while all 16 are in flight
        reports = RouteStore(service.state.db).gateways(stale_after=0.5)  # one accepted in the last half second
        assert reports == {"gw-flooded": {"generation": 0, "inflight": {}}}
        assert count(app, "taoflow_gateway_route_reports_refused_total") == 0
        for answer in answers:
            refused = answer.result()
            assert refused.status_code == 404 and "x-taoflow-served" not in refused.headers  # no echo of it
        assert app.router.inflight == {}


def test_a_refused_route_report_is_counted(tmp_path):
    with (
        daemon_admin(tmp_path) as (_, daemon_url),
        StandInReplica({"base"}) as replica,
        gateway(
            tmp_path,
            [replica],
            daemon={"gateway_token": "not-the-gateway-token-the-daemon-has"},
            daemon_url=daemon_url,
            routes_poll_seconds=0.1,
        ) as (app, _),
    ):
        refused = lambda: count(app, "taoflow_gateway_route_reports_refused_total") >= 2  # noqa: E731
        poll_until(refused, deadline_s=10, message="refused reports counted")


def test_only_answers_ingest_keeps_are_captured_and_a_large_prompt_is_redacted_on_the_way(tmp_path):
    secret = "sk-proj-abcdefghijklmnopqrstuvwx"
    large = {"model": "base", "messages": [{"role": "user", "content": f"{secret} " + "eyJ-" * (1 << 17)}]}
    with (
        StandInReplica({"base"}) as replica,
        gateway(tmp_path, [replica], ingest={"redact": ["secrets"]}, max_body_bytes=1 << 20) as (app, url),
    ):
        assert chat(url, "nobody-serves-this").status_code == 404  # the replica's refusal: nothing to learn from
        assert httpx.post(url + "/v1/chat/completions", json=large, timeout=60).status_code == 200
        assert chat(url, "base").status_code == 200
        poll_until(lambda: len(captured(tmp_path)) == 2, deadline_s=20, message="the two answers captured")
        time.sleep(0.5)  # the refusal would have been spooled before the answers that followed it
    records = captured(tmp_path)
    assert [r["status_code"] for r in records] == [200, 200]
    assert secret not in json.dumps(records)
    assert records[0]["request"]["messages"][0]["content"].startswith("[SECRET] eyJ-eyJ-")
    assert sum(count(app, "taoflow_gateway_capture_dropped_total", {"reason": r}) for r in DROP_REASONS) == 0


def raw_post(url: str, path: str, headers: dict[str, str], *, declared: int, sent: bytes) -> bytes:
    """A POST that declares `declared` body bytes and sends only `sent` of them: what comes back before the rest."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "Content-Length": str(declared)}.items())
        conn.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode() + sent)
        return conn.recv(65536)


def test_keyless_requests_are_refused_before_the_body_and_nothing_is_captured(tmp_path):
    metrics_token = "a-metrics-token-of-32-characters"
    with (
        StandInReplica({"base"}) as replica,
        gateway(
            tmp_path,
            [replica],
            api_keys=f"{KEY}\nanother-client-key-0123456789",
            daemon={
                "admin_port": free_port(),
                "metrics_token": metrics_token,
            },
        ) as (app, url),
    ):
        declared = 1 << 20  # a megabyte announced, 10 bytes sent: the answer cannot have waited for the body
        keyless = raw_post(url, "/v1/chat/completions", {}, declared=declared, sent=b'{"model":')
        wrong = raw_post(url, "/v1/chat/completions", {"Authorization": "Bearer nope"}, declared=declared, sent=b"{")
        assert keyless.startswith(b"HTTP/1.1 401") and b"www-authenticate: bearer" in keyless.lower()
        assert wrong.startswith(b"HTTP/1.1 403")
        assert httpx.get(url + "/v1/models").status_code == 401
        assert httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 403
        assert httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {metrics_token}"}).status_code == 200
        assert httpx.get(url + "/healthz").status_code == httpx.get(url + "/readyz").status_code == 200
        second_key = chat(url, "base", key="another-client-key-0123456789")
        assert second_key.status_code == 200
        time.sleep(1.0)  # what would have been captured is spooled by now
        assert len(replica.asked) == len(captured(tmp_path)) == 1  # only the keyed request
        # The client's key stays at the gateway: the replica (no fleet.api_key here) gets no Authorization.
        assert replica.authorizations == [None]
        assert count(app, "taoflow_gateway_unauthenticated_total") == 4


def test_a_task_label_is_honoured_only_from_a_client_with_a_key_for_a_known_task(tmp_path):
    known = {"tasks": ["support"]}
    with StandInReplica({"base"}) as replica:
        with gateway(tmp_path / "open", [replica], ingest=known) as (_, url):
            assert chat(url, "base", task="support").status_code == 200  # anonymous, on loopback
            poll_until(lambda: len(captured(tmp_path / "open")) == 1, deadline_s=10, message="captured")
        keyed = {"api_keys": KEY, "fleet_api_key": "the-fleets-own-vllm-api-key", "ingest": known}
        with gateway(tmp_path / "keyed", [replica], **keyed) as (_, url):
            assert chat(url, "base", task="support", key=KEY).status_code == 200
            assert chat(url, "base", task="my-own-label-0042", key=KEY).status_code == 200  # not a known task
            poll_until(lambda: len(captured(tmp_path / "keyed")) == 2, deadline_s=10, message="captured")
    assert [r["task"] for r in captured(tmp_path / "open")] == ["base"]  # the label ignored: the model name
    assert sorted(r["task"] for r in captured(tmp_path / "keyed")) == ["base", "support"]
    assert replica.authorizations == [None, *["Bearer the-fleets-own-vllm-api-key"] * 2]


def test_a_gateway_reachable_beyond_loopback_needs_client_keys_or_says_it_allows_anonymous_clients(tmp_path):
    settings = load_settings(None, gateway={"host": "0.0.0.0", "capture": {"spool_dir": str(tmp_path / "spool")}})
    with pytest.raises(ConfigurationError, match=r"gateway\.api_keys"):
        Gateway(settings)
    Gateway(
        load_settings(
            None,
            gateway={"host": "0.0.0.0", "allow_anonymous": True, "capture": {"spool_dir": str(tmp_path / "spool")}},
        )
    )
    Gateway(
        load_settings(
            None, gateway={"host": "0.0.0.0", "api_keys": KEY, "capture": {"spool_dir": str(tmp_path / "spool")}}
        )
    )
    short = load_settings(None, gateway={"api_keys": f"{KEY},short", "capture": {"spool_dir": str(tmp_path / "spool")}})
    with pytest.raises(ConfigurationError, match="under 16 characters"):
        Gateway(short)


def test_slow_clients_are_cut_at_the_deadline_and_the_number_of_clients_is_bounded(tmp_path):
    """Finding: 1 000 clients trickling a body were all still connected after 30 s (request_timeout_seconds bounds
    the upstream, not reading the request), and nothing bounded how many there were."""
    with (
        StandInReplica({"base"}) as replica,
        gateway(tmp_path, [replica], client_timeout_seconds=1.0, max_client_connections=300) as (_, url),
    ):
        host, port = url.removeprefix("http://").split(":")
        trickling = []
        for i in range(200):
            conn = socket.create_connection((host, int(port)), timeout=10)
            if i % 2:  # half send a head that never ends, half a whole head and a body that never ends
                conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            else:
                conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            trickling.append(conn)
        assert chat(url, "base").status_code == 200  # everyone else is served meanwhile
        answers = []
        for conn in trickling:
            conn.settimeout(10)  # the deadline is 1 s: each is answered or closed long before this
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
            answers.append(received)
            conn.close()
        heads, bodies = answers[1::2], answers[0::2]
        assert heads == [b""] * 100  # closed without an answer: the request never began
        assert all(b.startswith(b"HTTP/1.1 408") for b in bodies), bodies[0][:200]
        assert chat(url, "base").status_code == 200
        # Past max_client_connections a client is answered 503 at once (uvicorn's limit_concurrency).
        held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(300)]
        try:
            assert httpx.get(url + "/healthz").status_code == 503
        finally:
            for conn in held:
                conn.close()


def test_a_request_erased_at_the_daemon_leaves_the_gateways_spool(tmp_path):
    """Finding: the gateway's spool was never scrubbed: an erased request waited there, text and all, until the
    sink took it."""
    (tmp_path / "captured").write_text("a file where the sink's folder should be: every write fails")
    with (
        daemon_admin(tmp_path) as (service, daemon_url),
        StandInReplica({"base"}) as replica,
        gateway(
            tmp_path,
            [replica],
            daemon={"gateway_token": GATEWAY},
            daemon_url=daemon_url,
            routes_poll_seconds=0.1,
        ) as (app, url),
    ):
        secret = "my account number is 4711-0815"
        body = {"model": "base", "messages": [{"role": "user", "content": secret}]}
        kept = {"model": "base", "messages": [{"role": "user", "content": "What is 12 + 30?"}]}
        for request_id, payload in (("erase-me", body), ("keep-me", kept)):
            answer = httpx.post(url + "/v1/chat/completions", json=payload, headers={"x-request-id": request_id})
            assert answer.status_code == 200
        spool = tmp_path / "spool" / "spool.db"
        assert app.capture.spool.depth().records == 2  # the sink is down: both wait
        service.answers.forget(
            request_ids=["erase-me"], texts=[], reason="subject's request", limit=10, max_share=1.0, dry_run=False
        )
        poll_until(lambda: app.capture.spool.depth().records == 1, deadline_s=10, message="the erased one dropped")
        assert [r.key for r in app.capture.spool.batch(10)] == ["keep-me"]
        on_disk = b"".join(f.read_bytes() for f in spool.parent.glob("spool.db*"))
        assert secret.encode() not in on_disk and b"What is 12 + 30?" in on_disk


def test_a_default_install_redacts_e_mail_addresses_in_what_it_captures(tmp_path):
    """No `ingest.redact`: the prompt's address and the request's `user` field never reach the spool or the sink."""
    address = "jane.roe@example.com"
    body = {"model": "base", "messages": [{"role": "user", "content": f"Mail {address} the total."}], "user": address}
    with StandInReplica({"base"}) as replica, gateway(tmp_path, [replica]) as (_app, url):
        assert httpx.post(url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
        poll_until(lambda: len(captured(tmp_path)) == 1, deadline_s=20, message="the answer captured")
    (record,) = captured(tmp_path)
    assert record["request"]["messages"][0]["content"] == "Mail [EMAIL] the total."
    assert record["request"]["user"] == "[REDACTED]"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert address.encode() not in path.read_bytes(), path

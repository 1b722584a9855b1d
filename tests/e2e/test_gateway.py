"""`taoflow gateway` in front of two real vLLM CPU servers, with the real daemon's route table: a deploy under
load fails no request, the old version is drained and unloaded, streams pass unchanged, and every answered
exchange is captured in the shape taoflow's sources read."""

from __future__ import annotations

import json
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from taoflow.connectors.serving.replica import VllmReplica
from taoflow.connectors.sources.formats import parse_payload
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.state import State
from tests.e2e.stack import GATEWAY_TOKEN, MODEL, TOKEN, Stack
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import poll_until, start_until_logged
from tests.support.rounds import flywheel_round
from tests.support.state import store_adapter

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]


def served(server) -> set[str]:
    replica = VllmReplica(server.url)
    try:
        return set(replica.view().adapters)
    finally:
        replica.close()


def deploys(db: Path) -> list[dict]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM deploys ORDER BY id")]


def admin(port: int, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.request(method, f"http://127.0.0.1:{port}{path}", headers=headers, timeout=30, **kwargs)


def promote(port: int, db: Path, version: str) -> dict:
    count = len(deploys(db))
    answer = admin(port, "POST", "/v1/adapters/promote", json={"version": version, "reason": "test"})
    assert answer.status_code in (200, 202), answer.text
    return poll_until(
        lambda: next((d for d in deploys(db)[count:] if d["status"] in ("done", "reverted", "failed")), None),
        deadline_s=180,
        message=f"the deploy of {version}",
    )


@pytest.fixture
def stack(request, tmp_path, clean_fleet, fleet_adapters, base_model):
    """The daemon (admin API, fleet loop, route table) and one gateway, on the two replicas; a test's indirect
    parameter adds gateway.capture settings."""
    adapters = {name: fleet_adapters[name] for name in ("v42", "v43")}
    capture = getattr(request, "param", {})
    with Stack(tmp_path, clean_fleet, adapters, base_model, capture=capture) as running:
        yield {
            "admin": running.admin_port,
            "url": running.url,
            "db": running.db,
            "capture": running.capture,
            "gateway": running.gateway,
            "logs": running.logs,
        }


def ask(url: str, *, stream: bool = False, request_id: str | None = None) -> httpx.Response:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 12, "temperature": 0, "stream": stream}
    headers = {"x-request-id": request_id} if request_id else {}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=120)


def text_of(response: httpx.Response) -> str:
    return response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else ""


def captured(directory: Path) -> dict[str, dict]:
    records = {}
    for file in sorted(directory.glob("*.jsonl")):
        for line in file.read_bytes().splitlines():
            data = json.loads(line)
            records[data["databricks_request_id"]] = data
    return records


def test_a_deploy_through_the_gateway_fails_no_request_drains_and_unloads_the_old_version(stack, clean_fleet):
    url, db = stack["url"], stack["db"]
    first = promote(stack["admin"], db, "v42")
    assert first["status"] == "done", first
    poll_until(lambda: "42, my friend" in text_of(ask(url)), deadline_s=60, message="v42 through the gateway")
    assert all(served(s) == {"v42"} for s in clean_fleet)  # its own name: nothing is ever reloaded in place
    v42_path = VllmReplica(clean_fleet[0].url).view().adapters["v42"]

    results: list[tuple[float, float, int, str, str]] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        count = 0
        while not stop.is_set():
            started, count = time.monotonic(), count + 1
            request_id = f"load-{worker}-{count}"
            try:
                response = ask(url, request_id=request_id)
                results.append((started, time.monotonic(), response.status_code, text_of(response), request_id))
            except httpx.HTTPError as exc:
                results.append((started, time.monotonic(), 0, repr(exc), request_id))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        poll_until(lambda: len(results) >= 6, deadline_s=120, message="load before the deploy")
        record = promote(stack["admin"], db, "v43")
        swapped = time.monotonic()
        poll_until(lambda: sum(1 for r in results if r[0] > swapped) >= 6, deadline_s=120, message="load after")
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert record["status"] == "done", (record["reason"], record["detail"], "".join(stack["logs"][0])[-3000:])
    detail = json.loads(record["detail"])
    assert detail["drained"] is True and detail["canary_generation"] < detail["route_generation"], detail
    failed = [r for r in results if r[2] != 200]
    assert not failed, failed
    after = [r[3] for r in results if r[0] > swapped]
    assert after and all("43, buddy" in t for t in after), after
    assert all("42, my friend" in r[3] or "43, buddy" in r[3] for r in results)
    assert all(served(s) == {"v43"} for s in clean_fleet)  # v42 drained, then unloaded
    routes = admin(stack["admin"], "GET", "/v1/routes").json()
    assert routes["routes"] == {MODEL: [{"version": "v43", "weight": 1.0}]}
    # A version left loaded that nobody routes to (an unload that failed) is unloaded by the reconciler.
    VllmReplica(clean_fleet[1].url).load("v42", v42_path)
    poll_until(lambda: served(clean_fleet[1]) == {"v43"}, deadline_s=30, message="the stray v42 unloaded")
    # The gateway token reads routes and nothing else.
    gw = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
    base = f"http://127.0.0.1:{stack['admin']}"
    assert httpx.get(base + "/v1/routes", headers=gw).status_code == 200
    assert httpx.get(base + "/v1/status", headers=gw).status_code == 403

    # Every answered request is captured, in a shape the sources parse, with the version that served it.
    poll_until(lambda: {r[4] for r in results} <= set(captured(stack["capture"])), deadline_s=30, message="capture")
    records = captured(stack["capture"])
    for _, _, _, text, request_id in results:
        record = records[request_id]
        assert record["request_metadata"]["served_version"] in ("v42", "v43")
        assert record["request"]["model"] == MODEL and record["status_code"] == 200
        parsed = parse_payload(json.dumps(record))
        assert parsed.task == MODEL and parsed.response == text and parsed.request_id == request_id


def test_streams_pass_unchanged_and_are_captured_assembled(stack, clean_fleet):
    url = stack["url"]
    assert promote(stack["admin"], stack["db"], "v42")["status"] == "done"
    poll_until(lambda: ask(url).status_code == 200, deadline_s=60, message="the gateway routes")
    direct = httpx.post(
        clean_fleet[0].url + "/v1/chat/completions",
        json={"model": "v42", "messages": QUESTION, "max_tokens": 12, "temperature": 0, "stream": True},
        timeout=120,
    )
    through = ask(url, stream=True, request_id="stream-1")
    assert through.status_code == 200 and through.headers["content-type"].startswith("text/event-stream")
    assert through.headers["x-request-id"] == "stream-1" and through.headers["x-taoflow-served"] == "v42"

    def deltas(body: str) -> list[str]:
        events = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
        assert events[-1] == "[DONE]"
        return [
            json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if json.loads(e)["choices"]
        ]

    assert deltas(through.text) == deltas(direct.text)  # the same events (ids and times aside), in order
    text = "".join(deltas(through.text))
    poll_until(lambda: "stream-1" in captured(stack["capture"]), deadline_s=30, message="the stream's capture")
    record = captured(stack["capture"])["stream-1"]
    assert record["response"]["choices"][0]["message"]["content"] == text
    assert parse_payload(json.dumps(record)).response == text

    # A client that leaves mid-stream: the replica's stream is closed and the request counted out (the drain
    # of a deploy waits on these counts).
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 64, "min_tokens": 64, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as response:
        next(response.iter_raw())
    poll_until(
        lambda: "taoflow_gateway_inflight 0.0" in httpx.get(url + "/metrics", timeout=10).text,
        deadline_s=30,
        message="the abandoned stream counted out",
    )
    counted = [line for line in httpx.get(url + "/metrics").text.splitlines() if "gateway_requests_total{" in line]
    assert 'taoflow_gateway_requests_total{code="499",endpoint="chat"} 1.0' in counted, counted

    # Errors are answered in OpenAI's shape; a name nobody serves is the replica's own 404.
    assert httpx.post(url + "/v1/chat/completions", content=b"{", timeout=10).status_code == 400
    missing = httpx.post(
        url + "/v1/chat/completions", json={"model": "nobody", "messages": QUESTION, "max_tokens": 2}, timeout=60
    )
    assert missing.status_code == 404
    models = {m["id"] for m in httpx.get(url + "/v1/models", timeout=10).json()["data"]}
    assert {MODEL, "v42"} <= models
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert "taoflow_gateway_capture_spooled_total" in metrics and "taoflow_gateway_added_seconds_bucket" in metrics


def test_the_flywheel_through_the_gateway(tmp_path, kafka_bootstrap, clean_fleet, fleet_adapters, base_model):
    """client → gateway → vLLM → Kafka → `taoflow run` → round → deploy → the same client, through the same
    gateway and the same model name, is answered by the new version."""
    from kafka.admin import KafkaAdminClient, NewTopic

    topic = f"flywheel-{time.monotonic_ns()}"
    admin_client = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin_client.create_topics([NewTopic(topic, 1, 1)])
    admin_client.close()
    admin_port, gateway_port = free_port(), free_port()
    config = {
        "storage": {"state_dir": str(tmp_path / "state")},
        "model": {"served_name": MODEL},
        "source": {
            "kind": "kafka",
            "kafka": {
                "bootstrap_servers": [kafka_bootstrap],
                "topics": [topic],
                "group_id": topic,  # a group of its own: the session's broker serves other tests' groups too
                "max_poll_interval_ms": 5000,
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
            },
        },
        **flywheel_round(MODEL, min_new_prompts=8, cooldown_s=3600),
        "fleet": {
            "replicas": [s.url for s in clean_fleet],
            "routing": "gateway",
            "smoke_prompts": 0,
            "reconcile_interval_seconds": 2,
            "gateway_stale_seconds": 10,
            "watch": {"window_seconds": 0},
        },
        "daemon": {"admin_port": admin_port, "admin_token": TOKEN, "gateway_token": GATEWAY_TOKEN},
        "gateway": {
            "port": gateway_port,
            "routes_poll_seconds": 0.5,
            "capture": {"sink": "kafka", "spool_dir": str(tmp_path / "spool"), "flush_seconds": 0.2},
        },
    }
    path = tmp_path / "taoflow.yaml"
    path.write_text(yaml.safe_dump(config))
    state = State(load_settings(path))
    store_adapter(state, MODEL, "v42", fleet_adapters["v42"], base_model, gated=True)
    state.registry.promote("v42", reason="test: the live adapter")
    state.close()
    cli = [sys.executable, "-m", "taoflow.daemon.cli"]
    daemon, daemon_log = start_until_logged([*cli, "run", "--config", str(path)], "taoflow started", deadline_s=60)
    gateway, _ = start_until_logged([*cli, "gateway", "--config", str(path)], "gateway", deadline_s=60)
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        wait_for_port(gateway_port)
        poll_until(lambda: ask(url).headers.get("x-taoflow-served") == "v42", deadline_s=60, message="v42 routed")

        def arithmetic(i: int) -> httpx.Response:
            question = [{"role": "user", "content": f"What is {i + 11} + {2 * i + 5}?"}]
            body = {"model": MODEL, "messages": question, "max_tokens": 16, "temperature": 0}
            return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)

        assert all(arithmetic(i).status_code == 200 for i in range(16))  # production traffic, captured
        try:
            routed = poll_until(
                lambda: (
                    (r := admin(admin_port, "GET", "/v1/routes").json()["routes"].get(MODEL))
                    and r[0]["version"] != "v42"
                    and r
                ),
                deadline_s=900,
                interval_s=2,
                message="a round's adapter routed (ingest, round, gate, deploy)",
            )
        except AssertionError as exc:  # what the daemon did instead
            raise AssertionError(f"{exc}\n{''.join(daemon_log)[-4000:]}") from None
        new = routed[0]["version"]
        assert routed == [{"version": new, "weight": 1.0}]
        answer = poll_until(
            lambda: (a := arithmetic(3)).headers.get("x-taoflow-served") == new and a,
            deadline_s=60,
            message="the gateway to apply the new route",
        )
        direct = httpx.post(
            clean_fleet[0].url + "/v1/chat/completions",
            json={
                "model": new,
                "messages": [{"role": "user", "content": "What is 14 + 11?"}],
                "max_tokens": 16,
                "temperature": 0,
            },
            timeout=120,
        )
        assert text_of(answer) == text_of(direct)  # the new version's own answer, through the stable name
        assert all(served(s) == {new} for s in clean_fleet)  # v42 drained and unloaded
        with sqlite3.connect(f"file:{tmp_path / 'state' / 'taoflow.db'}?mode=ro", uri=True) as conn:
            trained = conn.execute("SELECT count(*) FROM prompts WHERE task=?", (MODEL,)).fetchone()[0]
        assert trained >= 16  # the captured exchanges became the round's prompts
    finally:
        for process in (gateway, daemon):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except Exception:
                process.kill()


def test_the_responses_and_messages_apis_are_relayed_and_captured_whole(stack, clean_fleet):
    """vLLM's /v1/responses and /v1/messages through the gateway for the stable name, streamed and not: each
    answer is the replica's, routed to the champion, and its capture parses back into the prompt with its system
    turn and the answer the client read."""
    url = stack["url"]
    assert promote(stack["admin"], stack["db"], "v42")["status"] == "done"
    poll_until(lambda: ask(url).status_code == 200, deadline_s=60, message="the gateway routes")
    bodies = {
        "responses": {"model": MODEL, "instructions": "Be brief.", "input": "What is 12 + 30?", "max_output_tokens": 8},
        "messages": {"model": MODEL, "system": "Be brief.", "messages": QUESTION, "max_tokens": 8},
    }
    read: dict[str, str] = {}
    for endpoint, body in bodies.items():
        for stream in (False, True):
            request_id = f"{endpoint}-{'stream' if stream else 'whole'}"
            answer = httpx.post(
                f"{url}/v1/{endpoint}",
                json={**body, "temperature": 0, "stream": stream},
                headers={"x-request-id": request_id},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-taoflow-served"] == "v42"
            if not stream:
                data = answer.json()
                read[request_id] = (
                    data["output"][-1]["content"][0]["text"] if endpoint == "responses" else data["content"][0]["text"]
                )
                continue
            events = [json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:")]
            deltas = [
                e.get("delta") if endpoint == "responses" else (e.get("delta") or {}).get("text")
                for e in events
                if e["type"] in ("response.output_text.delta", "content_block_delta")
            ]
            read[request_id] = "".join(d for d in deltas if isinstance(d, str))
    poll_until(lambda: set(read) <= set(captured(stack["capture"])), deadline_s=30, message="every capture")
    records = captured(stack["capture"])
    for request_id, text in read.items():
        record = parse_payload(json.dumps(records[request_id]))
        assert [m.role for m in record.messages] == ["system", "user"] and record.messages[0].content == "Be brief."
        assert record.response == text and text.strip(), (request_id, record.response, text)
    counted = httpx.get(url + "/metrics", timeout=10).text
    for endpoint in bodies:
        assert f'taoflow_gateway_requests_total{{code="2xx",endpoint="{endpoint}"}} 2.0' in counted


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
AGENT_BODIES = {
    "chat/completions": {
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}],
        "tool_choice": "required",
        "max_tokens": 120,
    },
    "responses": {
        "input": "What is the weather in Paris?",
        "tools": [{"type": "function", "name": "get_weather", "parameters": SCHEMA}],
        "tool_choice": "required",
        "max_output_tokens": 120,
    },
    "messages": {
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"name": "get_weather", "input_schema": SCHEMA}],
        "tool_choice": {"type": "any"},
        "max_tokens": 120,
    },
}


def calls_the_client_read(endpoint: str, answer: httpx.Response, stream: bool) -> list[tuple[str, object]]:
    """(name, arguments) of each call in an answer, read the way a client reads it (not through taoflow's code)."""
    if not stream:
        data = answer.json()
        if endpoint == "chat":
            message = data["choices"][0]["message"]
            calls = [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]
        elif endpoint == "responses":
            calls = [(o["name"], o["arguments"]) for o in data["output"] if o["type"] == "function_call"]
        else:
            return [(b["name"], b["input"]) for b in data["content"] if b["type"] == "tool_use"]
        return [(name, json.loads(arguments)) for name, arguments in calls]
    lines = [line[5:] for line in answer.text.splitlines() if line.startswith("data:")]
    events = [json.loads(line) for line in lines if line.strip() != "[DONE]"]
    if endpoint == "responses":
        (final,) = [e["response"] for e in events if e["type"] == "response.completed"]
        return [(o["name"], json.loads(o["arguments"])) for o in final["output"] if o["type"] == "function_call"]
    if endpoint == "messages":
        starts = [e["content_block"] for e in events if e["type"] == "content_block_start"]
        pieces = "".join(e["delta"].get("partial_json", "") for e in events if e["type"] == "content_block_delta")
        return [(next(b["name"] for b in starts if b["type"] == "tool_use"), json.loads(pieces))]
    deltas = [d for e in events for c in e["choices"] for d in (c["delta"].get("tool_calls") or [])]
    name = next(d["function"]["name"] for d in deltas if d["function"].get("name"))
    return [(name, json.loads("".join(d["function"].get("arguments") or "" for d in deltas)))]


def test_agent_requests_of_every_api_are_relayed_and_captured_with_their_tools_and_calls(stack, clean_fleet):
    """Chat completions, Responses and Messages with a tool the answer must call, streamed and not, through the
    gateway on real vLLM (its hermes parser, taoflow's chatml-tools template): each capture parses back into a
    prompt with its tools and tool_choice, and an answer whose calls are the calls the client read."""
    url = stack["url"]
    replica = VllmReplica(clean_fleet[0].url)
    base = replica.view().base  # the base model: the test's adapters were trained to chat about sums, not to call
    replica.close()
    read: dict[str, list[tuple[str, object]]] = {}
    for endpoint, body in AGENT_BODIES.items():
        for stream in (False, True):
            request_id = f"agent-{endpoint.replace('/', '-')}-{'stream' if stream else 'whole'}"
            answer = httpx.post(
                f"{url}/v1/{endpoint}",
                json={"model": base, **body, "temperature": 0, "stream": stream},
                headers={"x-request-id": request_id},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text
            read[request_id] = calls_the_client_read(endpoint.split("/")[0], answer, stream)
            assert read[request_id] and read[request_id][0][0] == "get_weather", (request_id, answer.text[:400])
    poll_until(lambda: set(read) <= set(captured(stack["capture"])), deadline_s=30, message="every capture")
    records = captured(stack["capture"])
    for request_id, calls in read.items():
        record = parse_payload(json.dumps(records[request_id]))
        assert [t.name for t in record.tools] == ["get_weather"] and record.tools[0].parameters == SCHEMA
        assert record.tool_choice == "required" and record.uses_tools
        assert [(c.name, c.parsed_arguments()) for c in record.response_calls] == calls, request_id


@pytest.mark.parametrize("stack", [{"token_ids": True}], indirect=True)
def test_capture_keeps_the_token_ids_the_replica_returned_to_replay_the_exchange(stack, clean_fleet, base_model):
    """With gateway.capture.token_ids the gateway asks vLLM for the prompt's and the answer's token ids; the
    capture keeps them (and the logprobs the client asked for), streamed or not, and they are the real tokens: the
    answer's ids decode to the text the client read, the prompt's to the rendered question."""
    from taoflow.connectors.generation.local import load_tokenizer

    tokenizer = load_tokenizer(base_model.path)
    url = stack["url"]
    assert promote(stack["admin"], stack["db"], "v42")["status"] == "done"
    poll_until(lambda: ask(url).status_code == 200, deadline_s=60, message="the gateway routes")
    read = {}
    for stream in (False, True):
        request_id = f"ids-{stream}"
        body = {"model": MODEL, "messages": QUESTION, "max_tokens": 8, "temperature": 0, "stream": stream}
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={**body, "logprobs": True},
            headers={"x-request-id": request_id},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        if stream:
            events = [json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data: {")]
            read[request_id] = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
        else:
            read[request_id] = answer.json()["choices"][0]["message"]["content"]
    poll_until(lambda: set(read) <= set(captured(stack["capture"])), deadline_s=30, message="every capture")
    records = captured(stack["capture"])
    for request_id, text in read.items():
        replay = parse_payload(json.dumps(records[request_id])).metadata["replay"]
        assert tokenizer.decode(replay["completion_ids"], skip_special_tokens=True) == text, request_id
        assert "What is 12 + 30?" in tokenizer.decode(replay["prompt_ids"])
        assert len(replay["logprobs"]) == len(replay["completion_ids"]) and all(v <= 0 for v in replay["logprobs"])

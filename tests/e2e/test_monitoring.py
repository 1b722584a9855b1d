"""The chart's dashboard and alerts against a real Prometheus that scrapes a real `taoflow run` and real vLLM
replicas, through a real round, a deploy and a rollback; then the daemon is SIGKILLed.

Every panel query of the shipped dashboard (template variables substituted) must return at least one series
with a number; TaoflowRollback and TaoflowDaemonDown must reach `firing` in Prometheus' /api/v1/alerts and
resolve once the rollback is old enough or the daemon is back.
"""

import json
import math
import signal
import sys
import time
import urllib.request
import uuid

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.state import State
from tests.helm.chart import CHART, by_kind, render
from tests.support.ports import free_port
from tests.support.processes import poll_until, start_until_logged
from tests.support.servers import PrometheusServer
from tests.support.state import hold_out, store_adapter

pytestmark = pytest.mark.slow

TOKEN = "monitoring-test-token-0123456789abcdef"
SCRAPER = "scraper-read-only-token-0123456789"  # what Prometheus holds: /metrics only
MODEL = "monitored-bot"
JOB = "taoflow"
VLLM_NAMESPACE = "test"


def admin(port, method, path, body=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def dashboard_queries():
    dashboard = json.loads((CHART / "dashboards" / "taoflow.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$job", JOB).replace("$vllm_namespace", VLLM_NAMESPACE)
            yield f"{panel['id']} {panel['title']} [{target['refId']}]", expr


def has_number(result):
    return any(not math.isnan(float(series["value"][1])) for series in result)


def chat(url, question):
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 8}
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200
        assert json.loads(response.read())["choices"]  # the whole answer, as a client reads it


def produce(bootstrap, topic):
    """Twelve prompts of the model's task, a malformed line (a dead letter) and a logged HTTP 500 (skipped)."""

    def exchange(i, question, **extra):
        return {
            "id": f"m-{i}",
            "task": MODEL,
            "request": {"messages": [{"role": "user", "content": question}]},
            **extra,
        }

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(12):
        producer.send(topic, json.dumps(exchange(i, f"What is {i + 10} + 7?")).encode())
    producer.send(topic, b"{not json: a dead letter")
    producer.send(topic, json.dumps(exchange(500, "Hi?", metadata={"status_code": 500})).encode())
    producer.flush()
    producer.close()


def test_every_panel_shows_data_and_the_alerts_fire_and_resolve(
    tmp_path, kafka_bootstrap, vllm_fleet, fleet_adapters, base_model
):
    topic = f"monitoring-{uuid.uuid4().hex[:6]}"
    KafkaAdminClient(bootstrap_servers=kafka_bootstrap).create_topics([NewTopic(topic, 1, 1)])
    state_dir, port, gateway_port = tmp_path / "state", free_port(), free_port()
    settings = {
        "storage": {"state_dir": str(state_dir)},
        "model": {"served_name": MODEL},
        "source": {
            "kind": "kafka",
            "kafka": {
                "bootstrap_servers": [kafka_bootstrap],
                "topics": [topic],
                "max_poll_interval_ms": 5000,
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
            },
        },
        "ingest": {"heldout_fraction": 0.0},
        "generate": {"n": 2, "max_prompts": 8, "max_new_tokens": 16},
        "score": {"tasks": {MODEL: [{"type": "arithmetic"}]}},
        # Any scored answer is a target and any adapter passes: this test is about what the operator sees.
        "train": {"score_threshold": 0.0, "epochs": 1, "batch_size": 4},
        "gate": {"min_samples": 2, "min_slice_samples": 2, "min_mean_improvement": -1.0, "max_slice_regression": 1.0},
        "retrain": {"min_new_prompts": 8, "cooldown_seconds": 3600, "evaluate_interval_seconds": 2},
        "daemon": {"admin_port": port, "admin_token": TOKEN, "metrics_token": SCRAPER},
        # Clients call the gateway too (it passes the stable name through: direct routing here), and it captures.
        "gateway": {
            "port": gateway_port,
            "capture": {"sink": "jsonl", "jsonl_dir": str(tmp_path / "capture"), "spool_dir": str(tmp_path / "spool")},
        },
        "fleet": {
            "replicas": [server.url for server in vllm_fleet],
            "smoke_prompts": 2,
            "smoke_max_regression": 1.0,
            "reconcile_interval_seconds": 2,
            "request_timeout_seconds": 60,
            "watch": {"window_seconds": 15, "max_error_rate": 1.0, "max_score_drop": 1.0, "min_requests": 1},
        },
    }
    config = tmp_path / "taoflow.yaml"
    config.write_text(yaml.safe_dump(settings))
    state = State(load_settings(config))  # the champion the round starts from, and the gate's held-out prompts
    store_adapter(state, MODEL, "v42", fleet_adapters["v42"], base_model, gated=True)
    state.registry.promote("v42", reason="test: the live adapter")
    hold_out(state, [PromptRecord(f"h-{i}", MODEL, (Message("user", f"What is {i} + 2?"),)) for i in range(3)])
    state.close()

    values = {
        "metrics": {"prometheusRule": {"enabled": True, "job": JOB, "daemonDownFor": "5s", "rollbackAlertMinutes": 1}},
        "settings": {"source": {"kind": "kafka"}},
    }
    (rules,) = by_kind(render(values), "PrometheusRule")
    scrape = [
        {
            "job_name": JOB,
            "authorization": {"type": "Bearer", "credentials": SCRAPER},
            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
        },
        {
            # The gateway's /metrics takes the same read-only token (as the chart's ServiceMonitor presents it).
            "job_name": f"{JOB}-gateway",
            "authorization": {"type": "Bearer", "credentials": SCRAPER},
            "static_configs": [{"targets": [f"127.0.0.1:{gateway_port}"]}],
        },
        {
            "job_name": "vllm",
            "static_configs": [
                {
                    "targets": [s.url.removeprefix("http://") for s in vllm_fleet],
                    "labels": {"namespace": VLLM_NAMESPACE},
                }
            ],
        },
    ]
    command = [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(config)]
    with PrometheusServer(
        tmp_path / "prometheus", scrape_configs=scrape, rules={"groups": rules["spec"]["groups"]}
    ) as prom:
        daemon, log = start_until_logged(command, "taoflow started")
        gateway_command = [sys.executable, "-m", "taoflow.daemon.cli", "gateway", "--config", str(config)]
        gateway, _ = start_until_logged(gateway_command, "gateway")
        try:
            produce(kafka_bootstrap, topic)
            # The round (generate, score, train, gate), then the fleet's deploy of its adapter; clients call the
            # stable name while the post-deploy watch looks, as production traffic would.
            promote = lambda *statuses: next(  # noqa: E731
                (
                    d
                    for d in admin(port, "GET", "/v1/fleet")["deploys"]
                    if d["kind"] == "promote" and d["status"] in statuses
                ),
                None,
            )
            poll_until(lambda: promote("watching", "done"), deadline_s=900, interval_s=2, message="the round's deploy")
            for server in vllm_fleet:
                for i in range(2):
                    chat(server.url, f"What is {i + 3} + 4?")
            poll_until(lambda: _ready(f"http://127.0.0.1:{gateway_port}"), deadline_s=30, message="the gateway")
            for i in range(3):
                chat(f"http://127.0.0.1:{gateway_port}", f"What is {i + 5} + 1?")
            new = poll_until(lambda: promote("done"), deadline_s=120, interval_s=1, message="the watch's end")[
                "version"
            ]
            # An operator rolls back to v42 (202: a recorded deploy the fleet task carries out).
            assert "rolls v42 back out" in admin(port, "POST", "/v1/adapters/rollback", {})["detail"]
            poll_until(
                lambda: admin(port, "GET", "/v1/status")["champion"] == "v42", deadline_s=300, message="the rollback"
            )
            rolled_back = time.monotonic()
            poll_until(lambda: prom.alert_states().get("TaoflowRollback") == "firing", deadline_s=60)
            print(f"TaoflowRollback firing {time.monotonic() - rolled_back:.1f} s after the rollback took effect")
            for i in range(2):  # the gateway's requests in the last minutes, for its latency panels
                chat(f"http://127.0.0.1:{gateway_port}", f"What is {i + 8} + 2?")
            # Every panel's queries, once Prometheus holds a few scrapes of everything that happened.
            time.sleep(5)
            answered = {name: prom.query(expr) for name, expr in dashboard_queries()}
            empty = sorted(name for name, result in answered.items() if not has_number(result))
            assert not empty, f"panel queries without data: {empty}"
            print(f"\n{len(answered)} panel queries, each with data; the deployed adapter was {new}")
            for name, result in answered.items():
                print(f"  {len(result):3d} series  {name}")
            poll_until(lambda: "TaoflowRollback" not in prom.alert_states(), deadline_s=120, message="it resolves")
            # The daemon dies: how long until Prometheus pages (5 s `for:` here; 3 m by default).
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=30)
            killed = time.monotonic()
            poll_until(lambda: prom.alert_states().get("TaoflowDaemonDown") == "firing", deadline_s=120, interval_s=0.2)
            print(f"TaoflowDaemonDown firing {time.monotonic() - killed:.1f} s after SIGKILL (for: 5s)")
            daemon, log = start_until_logged(command, "taoflow started")
            poll_until(lambda: "TaoflowDaemonDown" not in prom.alert_states(), deadline_s=120, message="it resolves")
        finally:
            gateway.send_signal(signal.SIGTERM)
            assert gateway.wait(timeout=60) == 0
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                assert daemon.wait(timeout=120) == 0, "".join(log)[-3000:]


def _ready(url):
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False

"""Outages of what the daemon reads from: it stays up, says it is not ready, retries with one line per attempt,
and picks up where it left off; settings that cannot work stop it with the reason."""

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from tests.support.brokers import tansu_broker
from tests.support.ports import free_port
from tests.support.processes import poll_until, start_until_logged
from tests.support.state import buffered_prompts

TOKEN = "outage-test-token-0123456789abcdef"
LISTENING = "admin API on http://"


def readyz(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def write_config(tmp_path, admin_port, source):
    config = tmp_path / "taoflow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"state_dir": str(tmp_path / "state")},
                "source": source,
                "daemon": {"admin_port": admin_port, "admin_token": TOKEN, "max_restarts": 1, "max_retry_seconds": 2},
            }
        )
    )
    return config


def test_a_kafka_outage_at_start_and_mid_stream_keeps_the_daemon_up_and_not_ready(tmp_path):
    broker_port, admin_port = free_port(), free_port()
    bootstrap, topic = f"127.0.0.1:{broker_port}", f"logs-{uuid.uuid4().hex[:6]}"
    kafka = {
        "bootstrap_servers": [bootstrap],
        "topics": [topic],
        "bootstrap_timeout_ms": 1000,
        "max_poll_interval_ms": 5000,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    }
    config = write_config(tmp_path, admin_port, {"kind": "kafka", "kafka": kafka})
    daemon, log = start_until_logged(
        [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(config)], LISTENING
    )
    try:
        # No broker at all: up, answering, not ready; one line per attempt, far past max_restarts.
        poll_until(lambda: sum("task source: cannot reach Kafka" in line for line in log) >= 3, deadline_s=60)
        status, body = readyz(admin_port)
        assert (status, body["tasks"]["source"]) == (503, False) and daemon.poll() is None
        with tansu_broker(broker_port):
            KafkaAdminClient(bootstrap_servers=bootstrap).create_topics([NewTopic(topic, 1, 1)])
            producer = KafkaProducer(bootstrap_servers=bootstrap)
            producer.send(topic, json.dumps({"messages": [{"role": "user", "content": "What is 2+2?"}]}).encode())
            producer.flush()
            producer.close()
            poll_until(lambda: readyz(admin_port)[0] == 200, deadline_s=60, message="ready once the broker is up")
            poll_until(lambda: buffered_prompts(tmp_path / "state" / "taoflow.db") == 1, deadline_s=60)
        # The broker goes away mid-stream: noticed at the next lag read, not ready again, still up.
        poll_until(lambda: readyz(admin_port)[0] == 503, deadline_s=30, message="not ready after the broker left")
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=60)
    text = "".join(log)
    assert code == 0, text[-3000:]
    assert "Traceback" not in text
    assert "stopping: task" not in text


def test_an_unreachable_bucket_is_an_outage_but_a_missing_one_stops_the_daemon(tmp_path, s3_endpoint):
    admin_port = free_port()
    env = {**os.environ, "AWS_MAX_ATTEMPTS": "1"}
    down = {"kind": "s3", "s3": {"bucket": "logs", "endpoint_url": "http://127.0.0.1:9", "poll_interval_seconds": 1}}
    config = write_config(tmp_path, admin_port, down)
    command = [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(config)]
    daemon, log = start_until_logged(command, LISTENING)
    try:
        poll_until(lambda: sum("task source: cannot list s3://logs/" in line for line in log) >= 3, deadline_s=60)
        assert readyz(admin_port)[0] == 503 and daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    missing = {"kind": "s3", "s3": {"bucket": "no-such-bucket", "endpoint_url": s3_endpoint}}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "taoflow.daemon.cli",
            "run",
            "--config",
            str(write_config(tmp_path, admin_port, missing)),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "stopping: task 'source' failed 2 times" in result.stderr
    assert "the bucket does not exist: check source.s3.bucket" in result.stderr

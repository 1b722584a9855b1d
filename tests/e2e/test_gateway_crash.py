"""Capture loses nothing: the gateway and the Kafka broker are SIGKILLed at random points under load on all four
endpoints (completions, chat completions, Responses, Messages), and afterwards every request that got a whole 200
answer is in the topic (a few twice: the buffer keeps one row per request id)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from taoflow.connectors.serving.replica import VllmReplica
from tests.support.brokers import durable_tansu_broker, moto_s3
from tests.support.ports import free_port, wait_for_port
from tests.support.processes import poll_until

pytestmark = pytest.mark.slow

TOPIC = "captured"
#: The gateway's endpoints, each with a short request body.
ENDPOINTS = {
    "completions": lambda n: {"prompt": f"Count: {n},", "max_tokens": 2},
    "chat/completions": lambda n: {"messages": [{"role": "user", "content": f"Count: {n},"}], "max_tokens": 2},
    "responses": lambda n: {"input": f"Count: {n},", "max_output_tokens": 2},
    "messages": lambda n: {"messages": [{"role": "user", "content": f"Count: {n},"}], "max_tokens": 2},
}


def test_sigkill_of_the_gateway_and_the_broker_loses_no_answered_exchange_of_any_endpoint(tmp_path, clean_fleet):
    rng = random.Random(13)
    replica = VllmReplica(clean_fleet[0].url)
    base = replica.view().base
    replica.close()
    with moto_s3() as s3, durable_tansu_broker(s3) as (bootstrap, broker):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(TOPIC, 2, 1)])
        admin.close()
        port = free_port()
        config = tmp_path / "taoflow.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "source": {"kind": "kafka", "kafka": {"bootstrap_servers": [bootstrap], "topics": [TOPIC]}},
                    "fleet": {"replicas": [s.url for s in clean_fleet]},
                    "gateway": {
                        "port": port,
                        "id": "gw-crash",
                        "daemon_url": f"http://127.0.0.1:{free_port()}",  # no daemon: names pass through
                        "replicas_poll_seconds": 0.5,
                        "capture": {"sink": "kafka", "spool_dir": str(tmp_path / "spool"), "flush_seconds": 0.2},
                    },
                }
            )
        )
        command = [sys.executable, "-m", "taoflow.daemon.cli", "gateway", "--config", str(config)]
        url = f"http://127.0.0.1:{port}"

        def start_gateway() -> subprocess.Popen[bytes]:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_for_port(port, deadline_s=60)
                poll_until(lambda: _ready(url), deadline_s=30, message="the gateway to see a replica")
            except BaseException:
                process.kill()  # a start that failed leaves no process behind
                process.wait()
                raise
            return process

        answered: list[str] = []
        attempts = 0
        stop = threading.Event()

        def client(worker: int) -> None:
            nonlocal attempts
            count = 0
            endpoint = sorted(ENDPOINTS)[worker % len(ENDPOINTS)]  # every endpoint the gateway captures
            while not stop.is_set():
                count += 1
                request_id = f"w{worker}-{count}"
                body = {"model": base, **ENDPOINTS[endpoint](count), "temperature": 0}
                attempts += 1
                try:
                    response = httpx.post(
                        f"{url}/v1/{endpoint}", json=body, headers={"x-request-id": request_id}, timeout=60
                    )
                    if response.status_code == 200 and response.json().get("id"):
                        answered.append(request_id)
                except (httpx.HTTPError, json.JSONDecodeError):
                    time.sleep(0.05)  # the gateway is down (or died mid-answer): that request was not answered

        gateway = start_gateway()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        kills = {"gateway": 0, "broker": 0}
        try:
            for _ in range(4):
                time.sleep(rng.uniform(1.0, 4.0))
                if rng.random() < 0.5:
                    broker.kill()
                    kills["broker"] += 1
                    time.sleep(rng.uniform(0.5, 3.0))  # the gateway keeps answering; records wait in its spool
                    broker.start()
                gateway.send_signal(signal.SIGKILL)
                gateway.wait()
                kills["gateway"] += 1
                gateway = start_gateway()
            time.sleep(1.0)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        try:
            assert kills["gateway"] == 4 and len(answered) >= 40, (kills, len(answered), attempts)
            per_worker = {request_id.split("-")[0] for request_id in answered}
            assert per_worker == {"w0", "w1", "w2", "w3"}, per_worker  # each endpoint answered

            def in_topic() -> dict[str, int]:
                consumer = KafkaConsumer(
                    TOPIC, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
                )
                keys: dict[str, int] = {}
                for message in consumer:
                    record = json.loads(message.value)
                    assert message.key.decode() == record["databricks_request_id"]
                    keys[message.key.decode()] = keys.get(message.key.decode(), 0) + 1
                consumer.close()
                return keys

            def complete() -> dict[str, int] | None:
                keys = in_topic()
                return keys if set(answered) <= set(keys) else None

            keys = poll_until(complete, deadline_s=90, interval_s=1.0, message="every answered request in the topic")
            duplicates = sum(n - 1 for n in keys.values())
            print(
                f"kills {kills}, answered {len(answered)} of {attempts}, in the topic {len(keys)}, twice {duplicates}"
            )
            assert duplicates <= kills["gateway"] * 500  # at most one unacknowledged batch per crash sent again
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=60)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False

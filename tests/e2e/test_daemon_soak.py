"""The daemon for several minutes against a real Kafka-protocol broker, a steady producer and the real model.

One story, in order: rounds start when the policy says (enough new prompts, after the
cooldown) and one at a time; /metrics equals the database; SIGTERM during a round stops
the daemon cleanly and the restarted daemon resumes that round without redoing its
completed steps; SIGKILL (with a round running) leaves no process behind and loses no
acknowledged prompt.
"""

import itertools
import json
import random
import signal
import sqlite3
import sys
import threading
import time
import urllib.request
import uuid

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from taoflow.connectors.lifetime import process_alive
from tests.support.ports import free_port
from tests.support.processes import descendants, poll_until, start_until_logged

pytestmark = pytest.mark.slow

TOKEN = "soak-test-token-0123456789abcdef"
READY = "taoflow started"
MIN_NEW = 16
RATE = 4  # records per second
N = 480  # two minutes of traffic


def query(db, sql, params=()):
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


def rounds(db):
    try:
        rows = query(db, "SELECT id, step, status, started_at, updated_at, summary, reason FROM rounds ORDER BY id")
    except sqlite3.OperationalError:
        return []
    return [
        {
            "id": r[0],
            "step": r[1],
            "status": r[2],
            "started": r[3],
            "updated": r[4],
            "summary": json.loads(r[5]),
            "reason": r[6],
        }
        for r in rows
    ]


def get(port, path):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def scrape(port):
    samples = {}
    for line in get(port, "/metrics").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_daemon_soak(tmp_path, kafka_bootstrap, base_model):
    topic = f"soak-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    port = free_port()
    config = tmp_path / "taoflow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"state_dir": str(tmp_path / "state")},
                "source": {
                    "kind": "kafka",
                    "kafka": {
                        "bootstrap_servers": [kafka_bootstrap],
                        "topics": [topic],
                        "group_id": "soak",
                        "poll_timeout_seconds": 0.2,
                        "session_timeout_ms": 6000,
                        "heartbeat_interval_ms": 1000,
                        "max_poll_interval_ms": 5000,
                    },
                },
                "ingest": {"heldout_fraction": 0.3, "heldout_max_per_task": 6},
                "generate": {"n": 4, "max_prompts": 64, "max_new_tokens": 24, "temperature": 0.8},
                "train": {"epochs": 1, "batch_size": 4, "score_threshold": 0.5, "save_steps": 1},
                "gate": {
                    "min_samples": 4,
                    "min_slice_samples": 2,
                    "max_new_tokens": 12,
                    "min_mean_improvement": -1.0,
                    "max_slice_regression": 1.0,
                },
                # Short answers count too: with 8 prompts x 4 samples the tiny model may get no sum right,
                # and a round with nothing to train fails (correctly) instead of exercising the loop.
                "score": {"tasks": {"math": [{"type": "arithmetic"}, {"type": "length", "params": {"max_chars": 80}}]}},
                "retrain": {
                    "min_new_prompts": MIN_NEW,
                    "cooldown_seconds": 3,
                    "budget_samples": 32,
                    "evaluate_interval_seconds": 0.5,
                },
                "daemon": {"admin_port": port, "admin_token": TOKEN, "drain_seconds": 20, "lock_stale_seconds": 20},
            }
        )
    )
    db = tmp_path / "state" / "taoflow.db"
    daemon = [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(config)]

    def producer() -> None:
        client = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for i in range(N):
            a, b = 10 + i % 37, 20 + (7 * i) % 41
            payload = {
                "id": f"req-{i}",
                "task": "math",
                "request": {"messages": [{"role": "user", "content": f"What is {a} + {b}? ({i})"}]},
            }
            client.send(topic, json.dumps(payload).encode())
            time.sleep(1 / RATE)
        client.flush()
        client.close()

    writer = threading.Thread(target=producer)
    writer.start()

    # 1. Rounds start on the policy, one at a time; SIGTERM during a round's training.
    logs = []
    process, log = start_until_logged(daemon, READY, deadline_s=60)
    logs.append(log)
    assert json.loads(get(port, "/readyz"))["ready"] is True
    poll_until(
        lambda: any(r["step"] in ("generate", "score") for r in rounds(db)),
        deadline_s=180,
        message="a round past generation",
    )
    before = rounds(db)[-1]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, "".join(log)[-3000:]
    interrupted = rounds(db)[-1]
    assert interrupted["id"] == before["id"] and interrupted["status"] == "running", interrupted

    # 2. The restarted daemon resumes that round; its completed steps are not redone.
    process, log = start_until_logged(daemon, READY, deadline_s=60)
    logs.append(log)
    poll_until(
        lambda: rounds(db)[interrupted["id"] - 1]["status"] != "running",
        deadline_s=240,
        message=f"round {interrupted['id']} to finish",
    )
    resumed = rounds(db)[interrupted["id"] - 1]
    # Done, or failed on its merits (e.g. nothing passed the scorers), never because it was interrupted.
    assert resumed["status"] == "done" or "Interrupted" not in resumed["reason"], resumed
    for step, summary in interrupted["summary"].items():
        assert resumed["summary"][step] == summary, f"step {step} was redone"
    assert "resuming round" in "".join(log)

    # 3. SIGKILL the daemon while a later round runs: its round process goes with it, nothing is lost.
    poll_until(
        lambda: len(rounds(db)) > interrupted["id"] and rounds(db)[-1]["status"] == "running",
        deadline_s=120,
        message="another round",
    )
    time.sleep(random.Random(11).uniform(0, 3))
    helpers = descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    poll_until(lambda: not any(process_alive(p) for p in helpers), deadline_s=15, message="the round process to exit")
    writer.join()

    process, log = start_until_logged(daemon, READY, deadline_s=60)
    logs.append(log)
    try:
        poll_until(lambda: query(db, "SELECT count(*) FROM prompts")[0][0] >= N, deadline_s=120, message=f"{N} prompts")
        poll_until(
            lambda: all(r["status"] != "running" for r in rounds(db)), deadline_s=300, message="the rounds to finish"
        )
        # Metrics scraped over HTTP are the database's numbers.
        metrics = scrape(port)
        assert sum(v for k, v in metrics.items() if k.startswith("taoflow_buffer_prompts{")) == N
        for status, count in query(db, "SELECT status, count(*) FROM rounds GROUP BY status"):
            label = "failed" if status == "failed" else None
            if label:
                assert metrics[f'taoflow_rounds_total{{result="{label}"}}'] == count
        done = query(db, "SELECT count(*) FROM rounds WHERE status='done'")[0][0]
        assert sum(v for k, v in metrics.items() if k.startswith("taoflow_rounds_total{")) == len(rounds(db))
        assert len(rounds(db)) >= 2 and done >= 1
        champion = query(db, "SELECT version FROM aliases WHERE alias='champion'")
        if champion:
            assert metrics[f'taoflow_champion_info{{model="taoflow",version="{champion[0][0]}"}}'] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=90)
    assert code == 0, "".join(log)[-3000:]

    ids = sorted(int(r[0].split("-")[1]) for r in query(db, "SELECT request_id FROM prompts"))
    assert ids == list(range(N)), "acknowledged prompts lost or doubled"
    # The policy: one round at a time, each after the cooldown, each started with at least MIN_NEW new
    # prompts (as the daemon logged its decision), each within the compute budget (32 samples / n=4).
    history = rounds(db)
    for earlier, later in itertools.pairwise(history):
        assert later["started"] >= earlier["updated"] + 3 - 0.5, (earlier, later)
    triggered = [line for lines in logs for line in lines if "round triggered (ready)" in line]
    assert triggered, "no round started on the policy"
    for line in triggered:
        assert int(line.rsplit("new prompts ", 1)[1].split()[0]) >= MIN_NEW, line
    assert all(r["summary"]["prepare"]["prompts"] == 8 for r in history)

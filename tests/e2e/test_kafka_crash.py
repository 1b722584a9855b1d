"""SIGKILL the consumer process at random points while a producer writes: nothing lost, nothing doubled."""

import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from tests.services import poll_until

N = 400


def count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM prompts").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not created yet by the consumer process


def test_sigkill_loses_and_duplicates_nothing(tmp_path, kafka_bootstrap):
    name = f"crash-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(name, 3, 1)])
    admin.close()
    config = tmp_path / "taoflow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"state_dir": str(tmp_path / "state")},
                "source": {
                    "kind": "kafka",
                    "kafka": {
                        "bootstrap_servers": [kafka_bootstrap],
                        "topics": [name],
                        "group_id": "crash",
                        "max_poll_records": 25,
                        "poll_timeout_seconds": 0.2,
                        "session_timeout_ms": 6000,
                        "heartbeat_interval_ms": 1000,
                        "max_poll_interval_ms": 5000,
                    },
                },
                "ingest": {"heldout_fraction": 0.2},
            }
        )
    )
    db = tmp_path / "state" / "taoflow.db"
    taoflow = [sys.executable, "-m", "taoflow.daemon.cli", "ingest", "--follow", "--config", str(config)]

    def producer() -> None:
        client = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for i in range(N):
            payload = {
                "id": f"req-{i}",
                "task": f"t{i % 3}",
                "request": {"messages": [{"role": "user", "content": f"Question number {i}"}]},
            }
            client.send(name, json.dumps(payload).encode())
            time.sleep(0.05)  # a steady 20 records/s for 20 s
        client.flush()
        client.close()

    writer = threading.Thread(target=producer)
    writer.start()
    rng = random.Random(20261121)
    kills = 0
    while writer.is_alive() or kills < 3:
        # Kill at a random point of progress: right after the consumer has stored a random number of
        # new records, which is often between the buffer commit and the offset commit.
        target = min(N, count(db) + rng.randint(5, 60))
        consumer = subprocess.Popen(taoflow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            poll_until(lambda t=target: count(db) >= t, deadline_s=60, interval_s=0.02, message="progress")
        finally:
            consumer.send_signal(signal.SIGKILL)
            consumer.wait()
        kills += 1
    writer.join()
    consumer = subprocess.Popen(taoflow, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll_until(lambda: count(db) >= N, deadline_s=120, message=f"{N} prompts in the buffer")
    finally:
        consumer.send_signal(signal.SIGTERM)
        _, err = consumer.communicate(timeout=60)
    assert consumer.returncode == 0, err[-2000:]
    with sqlite3.connect(db) as conn:
        ids = [row[0] for row in conn.execute("SELECT request_id FROM prompts")]
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(N))
    assert dead == 0
    assert kills >= 3

"""SIGKILL the consumer process at random points while a producer writes: nothing lost, nothing doubled."""

import json
import random
import signal
import sqlite3
import sys
import threading
import time
import uuid

import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from tests.support.processes import kill_at_random_progress, poll_until, start_until_logged
from tests.support.state import buffered_prompts

N = 400


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
    kills = kill_at_random_progress(taoflow, db, writer, random.Random(20261121), total=N, step=(5, 60))
    writer.join()
    consumer, log = start_until_logged(taoflow, "until stopped")
    try:
        poll_until(lambda: buffered_prompts(db) >= N, deadline_s=120, message=f"{N} prompts in the buffer")
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=60)
    assert consumer.returncode == 0, "".join(log)[-2000:]
    with sqlite3.connect(db) as conn:
        ids = [row[0] for row in conn.execute("SELECT request_id FROM prompts")]
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(N))
    assert dead == 0
    assert kills >= 3

"""SIGKILL the S3 ingest process at random points while objects keep arriving: exactly N records after."""

import json
import random
import signal
import sqlite3
import sys
import threading
import time
import uuid

import boto3
import yaml

from tests.support.processes import kill_at_random_progress, poll_until, start_until_logged
from tests.support.state import buffered_prompts

OBJECTS, PER_OBJECT = 40, 10
N = OBJECTS * PER_OBJECT


def test_sigkill_during_s3_ingestion_loses_and_duplicates_nothing(tmp_path, s3_endpoint):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"table-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    config = tmp_path / "taoflow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"state_dir": str(tmp_path / "state")},
                "source": {
                    "kind": "s3",
                    "s3": {
                        "bucket": name,
                        "prefix": "logs/",
                        "endpoint_url": s3_endpoint,
                        "poll_interval_seconds": 0.2,
                    },
                },
            }
        )
    )
    db = tmp_path / "state" / "taoflow.db"
    taoflow = [sys.executable, "-m", "taoflow.daemon.cli", "ingest", "--follow", "--config", str(config)]

    def writer() -> None:
        for o in range(OBJECTS):
            rows = [
                json.dumps(
                    {
                        "id": f"req-{o}-{r}",
                        "task": "support",
                        "request": {"messages": [{"role": "user", "content": f"Ticket {o}/{r}"}]},
                    }
                )
                for r in range(PER_OBJECT)
            ]
            client.put_object(Bucket=name, Key=f"logs/part-{o:04d}.jsonl", Body="\n".join(rows))
            time.sleep(0.25)  # objects land while the consumer works, as a table's writer does

    thread = threading.Thread(target=writer)
    thread.start()
    kills = kill_at_random_progress(taoflow, db, thread, random.Random(7), total=N, step=(3, 40))
    thread.join()
    consumer, log = start_until_logged(taoflow, "until stopped")
    try:
        poll_until(lambda: buffered_prompts(db) >= N, deadline_s=120, message=f"{N} prompts")
        poll_until(
            lambda: sqlite3.connect(db).execute("SELECT count(*) FROM ingested_objects").fetchone()[0] == OBJECTS,
            deadline_s=60,
            message="every object checkpointed",
        )
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=60)
    assert consumer.returncode == 0, "".join(log)[-2000:]
    with sqlite3.connect(db) as conn:
        ids = sorted(row[0] for row in conn.execute("SELECT request_id FROM prompts"))
    assert ids == sorted(f"req-{o}-{r}" for o in range(OBJECTS) for r in range(PER_OBJECT))
    assert kills >= 3

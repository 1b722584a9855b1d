"""SIGKILL the Delta ingest process at random points while the table (on the real S3 endpoint) keeps changing —
appends, a DELETE, OPTIMIZE: afterwards the buffer holds exactly the table's live rows."""

import random
import signal
import sqlite3
import sys
import threading
import time
import uuid

import boto3
import yaml
from deltalake import DeltaTable

from tests.support.delta_tables import append, inference_rows, live_request_ids
from tests.support.processes import kill_at_random_progress, poll_until, start_until_logged
from tests.support.state import buffered_prompts

APPENDS, PER_APPEND = 30, 10


def test_sigkill_during_delta_ingestion_loses_and_duplicates_nothing(tmp_path, s3_endpoint):
    bucket = f"tables-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/serving/inference"
    options = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    append(uri, inference_rows(0, PER_APPEND), options)
    config = tmp_path / "taoflow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"state_dir": str(tmp_path / "state")},
                "ingest": {"heldout_fraction": 0.0},
                "source": {
                    "kind": "delta",
                    "delta": {"table_uri": uri, "endpoint_url": s3_endpoint, "poll_interval_seconds": 0.2},
                },
            }
        )
    )
    db = tmp_path / "state" / "taoflow.db"
    taoflow = [sys.executable, "-m", "taoflow.daemon.cli", "ingest", "--follow", "--config", str(config)]

    def writer() -> None:
        for k in range(1, APPENDS):
            append(uri, inference_rows(k * PER_APPEND, PER_APPEND), options)
            if k == APPENDS // 2:  # an erasure request: two users' rows, in files taoflow has stored already
                DeltaTable(uri, storage_options=options).delete("databricks_request_id IN ('req-3', 'req-42')")
            if k == 2 * APPENDS // 3:
                DeltaTable(uri, storage_options=options).optimize.compact()
            time.sleep(0.2)  # versions land while the consumer works

    thread = threading.Thread(target=writer)
    thread.start()
    total = APPENDS * PER_APPEND - 2
    kills = kill_at_random_progress(taoflow, db, thread, random.Random(11), total=total, step=(5, 60))
    thread.join()
    latest = DeltaTable(uri, storage_options=options).version()
    consumer, log = start_until_logged(taoflow, "until stopped")
    try:
        poll_until(
            lambda: sqlite3.connect(db).execute("SELECT max(version) FROM table_versions").fetchone()[0] == latest,
            deadline_s=120,
            message=f"version {latest} ingested",
        )
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=60)
    assert consumer.returncode == 0, "".join(log)[-2000:]  # deltalake loaded: the exit stays clean too
    with sqlite3.connect(db) as conn:
        ids = [row[0] for row in conn.execute("SELECT request_id FROM prompts")]
        dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    live = live_request_ids(uri, options)
    assert len(live) == total and sorted(ids) == sorted(live)  # each live row once; the erased ones gone
    assert buffered_prompts(db) == total and dead == 0
    assert kills >= 3

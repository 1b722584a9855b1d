"""The S3 inference-table source against a real S3-compatible HTTP server (moto server mode)."""

import gzip
import io
import json
import threading
import time
import uuid

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry

from taoflow.connectors.errors import ConfigurationError, TemporaryError
from taoflow.connectors.sources.s3 import S3Config, S3Source
from taoflow.daemon.ingest.ingestor import Ingestor
from taoflow.daemon.ingest.metrics import IngestMetrics
from taoflow.daemon.ingest.streaming import ingest_objects
from taoflow.daemon.store.cursors import ingested_objects


def bucket(endpoint: str) -> tuple[str, object]:
    client = boto3.client("s3", endpoint_url=endpoint)
    name = f"tables-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    return name, client


def chat_line(i: int) -> str:
    return json.dumps(
        {"id": f"req-{i}", "task": "math", "request": {"messages": [{"role": "user", "content": f"What is {i} + 2?"}]}}
    )


def databricks_table(rows: range) -> bytes:
    table = pa.table(
        {
            "databricks_request_id": [f"dbx-{i}" for i in rows],
            "timestamp_ms": pa.array([1_790_000_000_000 + i for i in rows], pa.int64()),
            "status_code": pa.array([200 if i % 5 else 500 for i in rows], pa.int32()),
            "request": [json.dumps({"messages": [{"role": "user", "content": f"Summarise ticket {i}"}]}) for i in rows],
            "response": [json.dumps({"choices": [{"message": {"content": "ok"}}]}) for i in rows],
            "request_metadata": pa.array(
                [[("endpoint_name", "support-bot"), ("model_version", "3")] for _ in rows],
                pa.map_(pa.string(), pa.string()),
            ),
        }
    )
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def run_once(source, state, metrics=None, *, parse_processes=0):
    ingestor = Ingestor(state.buffer, source="s3", metrics=metrics)
    return ingest_objects(
        source,
        ingestor,
        state.buffer,
        state.db,
        stop=threading.Event(),
        follow=False,
        metrics=metrics,
        parse_processes=parse_processes,
    )


# 2: worker processes download and parse, each with its own client (what the daemon runs).
@pytest.mark.parametrize("parse_processes", [0, 2])
def test_jsonl_gzip_parquet_and_malformed_objects(s3_endpoint, state, parse_processes):
    name, client = bucket(s3_endpoint)
    put = lambda key, body: client.put_object(Bucket=name, Key=key, Body=body)  # noqa: E731
    put("t/2026/a.jsonl", "\n".join(chat_line(i) for i in range(10)) + "\n{broken\n")
    put("t/2026/b.jsonl.gz", gzip.compress("\n".join(chat_line(i) for i in range(10, 20)).encode()))
    put("t/2026/c.parquet", databricks_table(range(20)))
    put("t/2026/d.jsonl.gz", gzip.compress("\n".join(chat_line(i) for i in range(20, 30)).encode())[:-40])
    put("t/2026/e.jsonl", b"")
    put("t/2026/f.parquet", b"PAR1 not really parquet")
    put("t/2026/g.jsonl", "caf\xe9".encode("latin-1") + b"\n")
    put("t/2026/notes.txt", "not a log file: counted as skipped, never downloaded")
    put("other/x.jsonl", chat_line(999))
    source = S3Source(S3Config(bucket=name, prefix="t/", endpoint_url=s3_endpoint))
    registry = CollectorRegistry()
    report = run_once(source, state, IngestMetrics(registry), parse_processes=parse_processes)
    stats = state.buffer.stats()
    assert stats.tasks["math"].train + stats.tasks["math"].heldout >= 20  # a.jsonl, b.jsonl.gz, most of d
    assert stats.tasks["support-bot"].train + stats.tasks["support-bot"].heldout == 16  # 4 rows had status 500
    assert report.dead_lettered == {
        "invalid_json": 1,
        "truncated_gzip": 1,
        "empty_object": 1,
        "invalid_parquet": 1,
        "invalid_encoding": 1,
    }
    assert report.skipped == {"status_code": 4, "unsupported_object": 1}
    assert len(ingested_objects(state.db, "s3")) == 8  # notes.txt too: counted once, not on every listing
    assert run_once(source, state, IngestMetrics(CollectorRegistry()), parse_processes=parse_processes).read == 0
    assert registry.get_sample_value("taoflow_source_objects_pending", {"source": "s3"}) == 0
    assert registry.get_sample_value("taoflow_records_skipped_total", {"source": "s3", "reason": "status_code"}) == 4
    assert "req-999" not in {p.record.request_id for p in state.buffer.training_prompts(1000)}


def test_restart_neither_skips_nor_duplicates_and_sees_new_objects(s3_endpoint, state):
    name, client = bucket(s3_endpoint)
    client.put_object(Bucket=name, Key="a.jsonl", Body="\n".join(chat_line(i) for i in range(5)))
    source = S3Source(S3Config(bucket=name, endpoint_url=s3_endpoint))
    assert run_once(source, state).added == 5
    client.put_object(Bucket=name, Key="b.jsonl", Body="\n".join(chat_line(i) for i in range(5, 9)))
    # An object rewritten in place gets a new ETag: it is read again, its old records dedup away.
    client.put_object(Bucket=name, Key="a.jsonl", Body="\n".join(chat_line(i) for i in range(6)))
    second = run_once(source, state)
    assert (second.added, second.duplicates) == (4, 6)  # req-5 is in both new versions
    assert run_once(source, state).read == 0
    assert state.buffer.stats().total == 9


def test_settings_and_credential_errors_are_permanent_and_say_what_to_fix(s3_endpoint, monkeypatch):
    source = S3Source(S3Config(bucket="no-such-bucket", endpoint_url=s3_endpoint))
    with pytest.raises(ConfigurationError, match=r"the bucket does not exist: check source\.s3\.bucket"):
        source.pending(set())
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fresh = boto3.session.Session().client("s3", endpoint_url=s3_endpoint)  # the default session cached the keys
    anonymous = S3Source(S3Config(bucket="logs", endpoint_url=s3_endpoint), client=fresh)
    with pytest.raises(ConfigurationError, match="no AWS credentials found; set AWS_ACCESS_KEY_ID"):
        anonymous.pending(set())
    down = S3Source(S3Config(bucket="logs", endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(TemporaryError, match="cannot list s3://logs/"):
        down.pending(set())


def test_last_modified_order(s3_endpoint):
    name, client = bucket(s3_endpoint)
    for key in ("z.jsonl", "a.jsonl", "m.jsonl"):
        client.put_object(Bucket=name, Key=key, Body=chat_line(1))
        time.sleep(1.05)  # S3 LastModified has one-second resolution: make the three times differ
    by_key = S3Source(S3Config(bucket=name, endpoint_url=s3_endpoint)).pending(set())
    assert [r.key for r in by_key] == ["a.jsonl", "m.jsonl", "z.jsonl"]
    by_time = S3Source(S3Config(bucket=name, endpoint_url=s3_endpoint, order="last_modified")).pending(set())
    assert [r.key for r in by_time] == ["z.jsonl", "a.jsonl", "m.jsonl"]


def test_a_delta_table_prefix_reads_no_log_as_records_and_says_to_read_it_as_a_table(s3_endpoint, state, caplog):
    from tests.support.delta_tables import scenario

    name, _ = bucket(s3_endpoint)
    options = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    scenario(f"s3://{name}/serving/inference", options, change_data_feed=True)
    source = S3Source(S3Config(bucket=name, prefix="serving/", endpoint_url=s3_endpoint))
    report = run_once(source, state)
    assert sum(report.dead_lettered.values()) == 0 and state.buffer.stats().dead_letters == 0
    # Six commits, a checkpoint and its pointer, the DELETE's change data file: skipped, never downloaded.
    assert report.skipped["delta_log"] == 9
    assert caplog.text.count("is a Delta table") == 1 and "source.kind: delta" in caplog.text
    assert "s3://" + name + "/serving/inference" in caplog.text

"""Hostile records through every path (JSONL files, a real Kafka broker, a real S3 endpoint): each ends buffered,
skipped or dead-lettered with a reason, the stream goes on, and what was acknowledged is stored."""

from __future__ import annotations

import json
import threading
import uuid

import boto3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.sources.jsonl import MAX_LINE_BYTES, JsonlSource
from taoflow.connectors.sources.kafka import KafkaConfig, KafkaSource
from taoflow.connectors.sources.s3 import S3Config, S3Source
from taoflow.daemon.ingest.ingestor import MAX_DEAD_PAYLOAD, Ingestor, RecordPreparer
from taoflow.daemon.ingest.streaming import ingest_objects, run_stream
from taoflow.policies.ingest_filter import IngestFilter
from tests.support.processes import poll_until

MESSAGES = '"messages": [{"role": "user", "content": "What is 2 + 2?"}]'

#: (payload, how it must end). Each is a few KB at most, yet each escaped as an unexpected exception before.
POISON: list[tuple[bytes, str]] = [
    (b'{"request": {"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}}", "dead:too_deep"),
    (b'{"request": {' + MESSAGES.encode() + b'}, "timestamp": ' + b"9" * 5000 + b"}", "dead:invalid_json"),
    (b'{"request": {"messages": [{"role": "user", "content": "\\ud800 lone"}]}}', "dead:invalid_encoding"),
    (b'{"request_id": "x1", "task": "t", ' + MESSAGES.encode() + b', "metadata": [1, 2]}', "dead:bad_metadata"),
    (b'{"request_id": "x2", "task": "t", ' + MESSAGES.encode() + b', "metadata": "api_key=abc"}', "dead:bad_metadata"),
    (b'{"request": {' + MESSAGES.encode() + b'}, "timestamp": NaN}', "dead:bad_timestamp"),
    (b'{"request": {' + MESSAGES.encode() + b'}, "timestamp": Infinity}', "dead:bad_timestamp"),
    (
        b'{"databricks_request_id": "d1", "status_code": "\xc2\xb2", "request": {"messages": [{"role": "user", '
        b'"content": "What is 3 + 3?"}]}}',
        "buffered",
    ),  # "²" isdigit() but is no status: kept, not a crash
    (b'{"databricks_request_id": "d2", "status_code": 500, "request": {' + MESSAGES.encode() + b"}}", "skipped"),
    (b"\xff\xfe not utf-8", "dead:invalid_encoding"),
    (b"\x00" * 64, "dead:invalid_json"),
    (b'["a", "list"]', "dead:not_an_object"),
]


def good(i: int) -> bytes:
    return json.dumps(
        {"id": f"ok-{i}", "task": "t", "request": {"messages": [{"role": "user", "content": f"Q {i}?"}]}}
    ).encode()


def interleaved() -> list[bytes]:
    out = []
    for i, (payload, _) in enumerate(POISON):
        out += [good(i), payload]
    return [*out, good(len(POISON))]


def expected() -> tuple[int, int, dict[str, int]]:
    dead: dict[str, int] = {}
    for _, outcome in POISON:
        if outcome.startswith("dead:"):
            dead[outcome[5:]] = dead.get(outcome[5:], 0) + 1
    buffered = len(POISON) + 1 + sum(o == "buffered" for _, o in POISON)
    return buffered, sum(o == "skipped" for _, o in POISON), dead


def publish(bootstrap: str, payloads: list[bytes]) -> str:
    """A new one-partition topic holding `payloads`, in order."""
    topic = f"poison-{uuid.uuid4().hex[:6]}"
    KafkaAdminClient(bootstrap_servers=bootstrap).create_topics([NewTopic(topic, 1, 1)])
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for payload in payloads:
        producer.send(topic, payload)
    producer.flush()
    producer.close()
    return topic


def ingestor(state) -> Ingestor:
    return Ingestor(state.buffer, source="test", rules=IngestFilter(keep_status=frozenset({200})))


def assert_accounted(report, state) -> None:
    buffered, skipped, dead = expected()
    assert report.read == len(interleaved())
    assert (report.added, sum(report.skipped.values())) == (buffered, skipped)
    assert dict(report.dead_lettered) == dead
    assert state.buffer.stats().total == buffered


def test_poison_lines_in_a_file_and_a_line_of_many_megabytes(tmp_path, state):
    logs = tmp_path / "logs.jsonl"
    with logs.open("wb") as fh:
        for payload in interleaved():
            fh.write(payload + b"\n")
        fh.write(b'{"x": "' + b"a" * (3 * MAX_LINE_BYTES) + b'"}\n')  # never held whole in memory
        fh.write(good(999) + b"\n")
    report = ingestor(state).run(JsonlSource([logs]).read())
    assert report.dead_lettered["too_large"] == 1 and report.added == expected()[0] + 1
    (big,) = [d for d in state.buffer.dead_letters(limit=50) if d.reason == "too_large"]
    assert f"a line of {3 * MAX_LINE_BYTES + 10} bytes" in big.detail  # with its newline


def test_poison_messages_on_kafka_are_committed_past(kafka_bootstrap, state):
    topic = publish(kafka_bootstrap, interleaved())
    config = KafkaConfig(
        bootstrap_servers=[kafka_bootstrap],
        group_id=f"g-{topic}",
        topics=[topic],
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=5000,
    )
    stop, result = threading.Event(), {}
    thread = threading.Thread(
        target=lambda: result.update(r=run_stream(KafkaSource(config), ingestor(state), state.buffer, stop=stop))
    )
    thread.start()
    poll_until(lambda: state.buffer.stats().total == expected()[0], deadline_s=60, message="every good record")
    stop.set()
    thread.join(30)
    assert not thread.is_alive()
    assert_accounted(result["r"], state)
    # Everything was acknowledged: a new member of the group reads nothing again.
    again = KafkaSource(config)
    try:
        assert sum(len(again.poll(timeout_s=1.0)) for _ in range(8)) == 0
    finally:
        again.close()


def test_poison_lines_in_an_s3_object_parsed_by_worker_processes(s3_endpoint, state):
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = f"poison-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="logs/a.jsonl", Body=b"\n".join(interleaved()))
    source = S3Source(S3Config(bucket=name, endpoint_url=s3_endpoint))
    report = ingest_objects(
        source,
        ingestor(state),
        state.buffer,
        state.db,
        stop=threading.Event(),
        follow=False,
        parse_processes=1,
    )
    assert_accounted(report, state)


def test_a_dead_letter_keeps_a_bounded_part_of_a_huge_record(state):
    huge = SourceItem(payload=b'{"request": ' + b"x" * (4 << 20), origin="big")
    prepared = RecordPreparer().prepare([huge])
    (dead,) = prepared.dead
    assert dead.reason == "too_large" and len(dead.payload) == MAX_DEAD_PAYLOAD and "4194316 bytes" in dead.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
shapes = st.fixed_dictionaries(
    {},
    optional={
        "request": json_values | st.fixed_dictionaries({"messages": json_values}),
        "messages": json_values,
        "metadata": json_values,
        "status_code": json_values,
        "timestamp": json_values,
        "task": json_values,
        "request_id": json_values,
        "databricks_request_id": json_values,
        "response": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.binary(max_size=300) | shapes.map(lambda d: json.dumps(d).encode()))
def test_any_bytes_end_buffered_skipped_or_dead_lettered(payload):
    prepared = RecordPreparer(rules=IngestFilter(keep_status=frozenset({200}))).prepare([SourceItem(payload, "fuzz")])
    outcomes = len(prepared.rows) + len(prepared.dead) + sum(prepared.skipped.values())
    assert outcomes == 1
    for dead in prepared.dead:
        assert dead.reason and dead.reason != "parser_error", dead  # every shape has a reason of its own


def test_the_daemon_reads_past_poison_and_stays_up(kafka_bootstrap, tmp_path):
    import signal
    import sqlite3
    import sys
    import urllib.request

    import yaml

    from tests.support.ports import free_port
    from tests.support.processes import start_until_logged

    topic = publish(kafka_bootstrap, interleaved())
    port, token = free_port(), "poison-daemon-token-0123456789"
    kafka = {
        "bootstrap_servers": [kafka_bootstrap],
        "topics": [topic],
        "max_poll_interval_ms": 5000,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
    }
    config = tmp_path / "taoflow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"state_dir": str(tmp_path / "state")},
                "source": {"kind": "kafka", "kafka": kafka},
                "daemon": {
                    "admin_port": port,
                    "admin_token": token,
                    "max_restarts": 0,
                },  # one source failure would stop it
            }
        )
    )
    daemon, log = start_until_logged(
        [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(config)], "taoflow started"
    )
    db = tmp_path / "state" / "taoflow.db"

    def counts():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute("SELECT count(*) FROM prompts").fetchone()[0], conn.execute(
                "SELECT count(*) FROM dead_letters"
            ).fetchone()[0]

    try:
        buffered, _, dead = expected()
        poll_until(
            lambda: counts() == (buffered, sum(dead.values())), deadline_s=60, message="every record accounted for"
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as ready:
            assert ready.status == 200 and daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0, "".join(log)[-3000:]
    assert "Traceback" not in "".join(log)

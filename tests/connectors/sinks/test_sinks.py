"""The capture sinks write what taoflow's own sources read back: S3 objects through the S3 source (a real
S3-compatible server), Kafka records through a consumer group (a real Kafka-protocol broker), JSON lines
through the jsonl source."""

import json
import threading
import uuid

import boto3
import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from taoflow.connectors.errors import TemporaryError
from taoflow.connectors.sinks.base import Captured
from taoflow.connectors.sinks.jsonl import JsonlSink
from taoflow.connectors.sinks.kafka import KafkaSink
from taoflow.connectors.sinks.s3 import S3Sink
from taoflow.connectors.sources.formats import parse_payload
from taoflow.connectors.sources.jsonl import JsonlSource
from taoflow.connectors.sources.redaction import Redactor
from taoflow.connectors.sources.s3 import S3Config, S3Source
from taoflow.daemon.gateway.captured import exchange_record
from taoflow.daemon.ingest.ingestor import Ingestor
from taoflow.daemon.ingest.streaming import ingest_objects
from tests.support.ports import free_port


def records(first: int, count: int) -> list[Captured]:
    out = []
    for i in range(first, first + count):
        value = exchange_record(
            request_id=f"gw-{i}",
            task="math",
            request={"model": "bot", "messages": [{"role": "user", "content": f"What is {i} + 1?"}]},
            status=200,
            response={"choices": [{"message": {"role": "assistant", "content": str(i + 1)}}]},
            started=1_790_000_000.0 + i,
            latency_s=0.1,
            model="bot",
            version="v1",
            replica="http://r",
            gateway="gw",
            redactor=Redactor([]),
        )
        out.append(Captured(i, f"gw-{i}", value, 1_790_000_000.0 + i))
    return out


def test_s3_objects_are_read_by_the_s3_source_and_a_batch_sent_twice_is_one_prompt_each(s3_endpoint, state):
    name = f"capture-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    sink = S3Sink(name, "inference/", gateway="gw-a", endpoint_url=s3_endpoint)
    sink.send(records(1, 10))
    sink.send(records(11, 5))
    sink.send(records(11, 7))  # a crash after the put, before the spool forgot them: sent again with more
    keys = sorted(
        o["Key"] for o in boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=name)["Contents"]
    )
    assert keys[0].startswith("inference/date=2026-") and keys[0].endswith("-000000000001-000000000010.jsonl.gz")
    ingestor = Ingestor(state.buffer, source="s3")
    report = ingest_objects(
        S3Source(S3Config(bucket=name, prefix="inference/", endpoint_url=s3_endpoint)),
        ingestor,
        state.buffer,
        state.db,
        stop=threading.Event(),
        follow=False,
        parse_processes=0,
    )
    assert (report.added, report.duplicates, report.dead_lettered) == (17, 5, {})
    buffered = [*state.buffer.training_prompts(100), *state.buffer.heldout()]
    prompt = next(p.record for p in buffered if p.record.request_id == "gw-3")
    assert prompt.task == "math" and prompt.response == "4" and prompt.metadata["served_version"] == "v1"
    sink.close()
    with pytest.raises(TemporaryError):
        S3Sink("no-such-bucket-here", "", gateway="gw", endpoint_url=s3_endpoint).send(records(1, 1))


def test_kafka_records_are_keyed_by_request_id_and_a_dead_broker_is_a_temporary_error(kafka_bootstrap):
    topic = f"capture-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    sink = KafkaSink([kafka_bootstrap], topic, timeout_s=10)
    sink.send(records(1, 20))
    consumer = KafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    got = {m.key.decode(): json.loads(m.value) for m in consumer}
    consumer.close()
    assert set(got) == {f"gw-{i}" for i in range(1, 21)}
    assert got["gw-7"]["databricks_request_id"] == "gw-7" and got["gw-7"]["status_code"] == 200
    sink.close()
    dead = KafkaSink([f"127.0.0.1:{free_port()}"], topic, timeout_s=1)
    with pytest.raises(TemporaryError, match="cannot write to Kafka"):
        dead.send(records(1, 1))


def test_json_lines_are_read_by_the_jsonl_source(tmp_path):
    sink = JsonlSink(tmp_path / "capture", gateway="gw-b")
    sink.send(records(1, 3))
    sink.send(records(4, 2))
    (path,) = (tmp_path / "capture").glob("capture-*-gw-b.jsonl")
    items = list(JsonlSource([tmp_path / "capture"]).read())
    parsed = [parse_payload(item.payload) for item in items]
    assert [r.request_id for r in parsed] == [f"gw-{i}" for i in range(1, 6)] and len(
        path.read_text().splitlines()
    ) == 5

"""The Kafka source against a real Kafka-protocol broker: at-least-once, dead letters, backpressure."""

import json
import threading
import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from prometheus_client import CollectorRegistry

from taoflow.connectors.sources.kafka import KafkaConfig, KafkaSource
from taoflow.daemon.ingest.ingestor import Ingestor
from taoflow.daemon.ingest.metrics import IngestMetrics
from taoflow.daemon.ingest.streaming import run_stream
from taoflow.daemon.store.buffer import PromptBuffer
from tests.support.processes import poll_until

# tansu answers JoinGroup only after the rebalance timeout, which follows max_poll_interval_ms.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 5000}


def topic(bootstrap: str, partitions: int = 2) -> str:
    name = f"logs-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, partitions, 1)])
    admin.close()
    return name


def chat(i: int) -> bytes:
    return json.dumps(
        {"id": f"req-{i}", "task": "math", "request": {"messages": [{"role": "user", "content": f"What is {i} + 1?"}]}}
    ).encode()


def produce(bootstrap: str, name: str, payloads: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 << 20)
    for i, payload in enumerate(payloads):
        producer.send(name, payload, partition=i % 2)
    producer.flush()
    producer.close()


def source(bootstrap: str, name: str, group: str, **options) -> KafkaSource:
    return KafkaSource(
        KafkaConfig(bootstrap_servers=[bootstrap], group_id=group, topics=[name], **FAST_GROUP, **options)
    )


def committed(bootstrap: str, name: str, group: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    result = {p: consumer.committed(TopicPartition(name, p)) for p in (0, 1)}
    consumer.close()
    return result


def stream_in_thread(src, state, *, metrics=None):
    stop = threading.Event()
    ingestor = Ingestor(state.buffer, source="kafka", metrics=metrics)
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(
            report=run_stream(src, ingestor, state.buffer, stop=stop, poll_timeout_s=0.2, metrics=metrics)
        )
    )
    thread.start()
    return stop, thread, result


MALFORMED = [
    b"{not json",
    b'["a", "list"]',
    b'{"request": {"messages": []}}',
    "caf\xe9".encode("latin-1"),
    b"",
    b'{"request": {"messages": [{"role": "user", "content": "' + b"x" * (1 << 20) + b'"}]}}',
]


def test_records_and_malformed_messages_are_all_accounted_for_and_committed(kafka_bootstrap, state):
    name, group = topic(kafka_bootstrap), f"g-{uuid.uuid4().hex[:6]}"
    payloads = [chat(i) for i in range(30)] + MALFORMED
    produce(kafka_bootstrap, name, payloads)
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    stop, thread, result = stream_in_thread(source(kafka_bootstrap, name, group), state, metrics=metrics)
    try:
        poll_until(
            lambda: state.buffer.stats().total == 30 and state.buffer.stats().dead_letters == 6,
            deadline_s=60,
            message="30 prompts and 6 dead letters",
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    reasons = sorted(d.reason for d in state.buffer.dead_letters())
    assert reasons == sorted(["invalid_json", "not_an_object", "no_messages", "invalid_encoding", "empty", "too_large"])
    origins = {d.origin.rsplit("/", 2)[0] for d in state.buffer.dead_letters()}
    assert origins == {f"kafka:{name}"}
    # Committed offset = last processed + 1, on both partitions: 36 messages, 18 each.
    assert committed(kafka_bootstrap, name, group) == {0: 18, 1: 18}
    assert result["report"].added == 30
    sample = registry.get_sample_value
    assert sample("taoflow_records_ingested_total", {"source": "kafka"}) == 30
    assert sample("taoflow_records_dead_lettered_total", {"source": "kafka", "reason": "too_large"}) == 1
    assert sample("taoflow_source_last_poll_timestamp_seconds", {"source": "kafka"}) > 0
    lags = [
        sample("taoflow_source_consumer_lag_records", {"source": "kafka", "partition": f"{name}/{p}"}) for p in (0, 1)
    ]
    assert lags == [0.0, 0.0]  # everything read


def test_a_restarted_consumer_replays_nothing_twice(kafka_bootstrap, state):
    name, group = topic(kafka_bootstrap), f"g-{uuid.uuid4().hex[:6]}"
    produce(kafka_bootstrap, name, [chat(i) for i in range(10)])
    src = source(kafka_bootstrap, name, group)
    items = poll_until(lambda: src.poll(timeout_s=0.5), deadline_s=30, message="first records")
    # Stored but not committed: exactly the window a crash can hit.
    Ingestor(state.buffer, source="kafka").run(items)
    src.close()
    stop, thread, _ = stream_in_thread(source(kafka_bootstrap, name, group), state)
    try:
        poll_until(
            lambda: committed(kafka_bootstrap, name, group) == {0: 5, 1: 5},
            deadline_s=60,
            message="offsets committed after the replay",
        )
    finally:
        stop.set()
        thread.join(timeout=30)
    assert state.buffer.stats().total == 10


def test_backpressure_pauses_at_the_cap_and_loses_nothing(kafka_bootstrap, state):
    name, group = topic(kafka_bootstrap), f"g-{uuid.uuid4().hex[:6]}"
    produce(kafka_bootstrap, name, [chat(i) for i in range(40)])
    src = source(kafka_bootstrap, name, group, max_poll_records=5)  # small polls: the cap falls between them
    state.buffer.cap, state.buffer.overflow = 10, "pause"  # ingest.overflow: pause
    stop, thread, _ = stream_in_thread(src, state)
    try:
        poll_until(lambda: src.paused, deadline_s=60, message="the source to pause at the cap")
        held = state.buffer.untrained()
        assert 10 <= held < 40

        def rounds_consume_until_all_arrived() -> bool:
            # Rounds keep consuming prompts: the source resumes each time and reads the rest.
            state.buffer.mark_consumed([p.id for p in state.buffer.training_prompts(1000)], round_id=1)
            return state.buffer.stats().total == 40

        poll_until(rounds_consume_until_all_arrived, deadline_s=60, message="all 40 records after resuming")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert state.buffer.stats().total == 40


def test_an_evicting_buffer_keeps_the_stream_flowing_and_the_newest_prompts(kafka_bootstrap, state):
    name, group = topic(kafka_bootstrap, partitions=1), f"g-{uuid.uuid4().hex[:6]}"
    produce_one = [chat(i) for i in range(40)]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for payload in produce_one:
        producer.send(name, payload)
    producer.flush()
    producer.close()
    src = KafkaSource(
        KafkaConfig(
            bootstrap_servers=[kafka_bootstrap], group_id=group, topics=[name], max_poll_records=5, **FAST_GROUP
        )
    )
    # ingest.overflow: evict_oldest (the default), no held-out split here so every prompt counts against the cap
    state.buffer = PromptBuffer(state.db, heldout_fraction=0.0, heldout_max_per_task=0, cap=10)
    state.buffer.overflow = "evict_oldest"
    stop, thread, result = stream_in_thread(src, state)
    try:
        poll_until(lambda: state.buffer.evictions() == {("math", "evict_oldest"): 30}, deadline_s=60)
        assert not src.paused
    finally:
        stop.set()
        thread.join(timeout=30)
    report = result["report"]
    assert (report.read, report.added, report.evicted) == (40, 40, 30)
    kept = sorted(int(p.record.request_id.split("-")[1]) for p in state.buffer.training_prompts(100))
    assert kept == list(range(30, 40))  # the newest window of the traffic


def test_missing_topics_are_a_configuration_error():
    from taoflow.connectors.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="topics"):
        KafkaSource(KafkaConfig(bootstrap_servers=["127.0.0.1:1"], group_id="g"))


def test_a_topic_that_does_not_exist_is_named_at_start(kafka_bootstrap, caplog):
    existing = topic(kafka_bootstrap)
    with caplog.at_level("WARNING", logger="taoflow.connectors.sources.kafka"):
        src = KafkaSource(
            KafkaConfig(
                bootstrap_servers=[kafka_bootstrap],
                group_id="g-missing",
                topics=[existing, "no-such-topic"],
                **FAST_GROUP,
            )
        )
        src.close()
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith("Kafka topic(s) no-such-topic do not exist: nothing is consumed from them")
    assert existing in warning


def test_an_unreachable_broker_is_a_temporary_error():
    from taoflow.connectors.errors import TemporaryError
    from tests.support.ports import free_port

    with pytest.raises(TemporaryError, match="cannot reach Kafka at"):
        KafkaSource(
            KafkaConfig(
                bootstrap_servers=[f"127.0.0.1:{free_port()}"], group_id="g", topics=["t"], bootstrap_timeout_ms=500
            )
        )

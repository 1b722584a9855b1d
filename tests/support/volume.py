"""A burst of traffic through a real Kafka-protocol broker into a capped buffer while rounds consume from it: the
scenario `tests/daemon/ingest/test_volume.py` runs small and `bench/volume.py` runs at a million messages."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

from taoflow.connectors.sources.kafka import KafkaConfig, KafkaSource
from taoflow.daemon.ingest.ingestor import Ingestor, IngestReport
from taoflow.daemon.ingest.streaming import run_stream
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.storage import Database

#: Traffic share per task: one loud task and three quiet ones.
SHARES = {"loud": 0.7, "billing": 0.1, "search": 0.1, "sql": 0.1}


@dataclass
class VolumeRun:
    messages: int
    seconds: float = 0.0
    report: IngestReport = field(default_factory=IngestReport)
    ever_paused: bool = False
    rounds: int = 0
    consumed: int = 0
    new_per_task: dict[str, int] = field(default_factory=dict)
    held: int = 0
    evicted: int = 0
    newest_age_s: float = 0.0
    caught_up_s: float = 0.0
    produced_s: float = 0.0


def task_of(i: int) -> str:
    bucket = (i * 7919) % 100  # deterministic, interleaved
    edge = 0.0
    for task, share in SHARES.items():
        edge += share * 100
        if bucket < edge:
            return task
    return "loud"


def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 18)
    for i in range(count):
        record = {"id": f"v-{i}", "task": task_of(i), "request": {"messages": [{"role": "user", "content": f"q{i}?"}]}}
        producer.send(topic, json.dumps(record).encode())
    producer.flush()
    producer.close()


def run(bootstrap: str, workdir: Path, *, messages: int, cap: int, round_every_s: float = 1.0) -> VolumeRun:
    """Produce `messages` at full speed while the source consumes into a buffer of `cap` (evict_oldest) and a
    stand-in for rounds marks 256 prompts consumed every `round_every_s`, until the producer is done; then the
    source runs until it has read every message."""
    topic = f"volume-{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    admin.close()
    db = Database(workdir / "volume.db")
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0, cap=cap, overflow="evict_oldest")
    config = KafkaConfig(
        bootstrap_servers=[bootstrap],
        group_id=f"g-{topic}",
        topics=[topic],
        max_poll_records=2000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=5000,
    )
    source = KafkaSource(config)
    out = VolumeRun(messages=messages)
    stop, producing = threading.Event(), threading.Event()
    producing.set()
    result: dict[str, IngestReport] = {}
    consumer = threading.Thread(
        target=lambda: result.update(r=run_stream(source, Ingestor(buffer, source="kafka"), buffer, stop=stop))
    )

    def rounds() -> None:
        while producing.is_set():
            chosen = buffer.training_prompts(256)
            buffer.mark_consumed([p.id for p in chosen], round_id=out.rounds + 1)
            out.rounds += 1
            out.consumed += len(chosen)
            out.ever_paused |= source.paused
            time.sleep(round_every_s)

    started = time.monotonic()
    consumer.start()
    rounder = threading.Thread(target=rounds)
    rounder.start()
    produce(bootstrap, topic, messages)
    out.produced_s = time.monotonic() - started
    producing.clear()
    rounder.join()
    deadline = time.monotonic() + 600
    while _read(db) < messages and time.monotonic() < deadline:
        out.ever_paused |= source.paused
        time.sleep(0.1)
    out.caught_up_s = time.monotonic() - started
    stop.set()
    consumer.join(60)
    out.seconds = time.monotonic() - started
    out.report = result["r"]
    stats = buffer.stats()
    out.new_per_task = {task: c.new for task, c in stats.tasks.items()}
    out.held = stats.total
    out.evicted = sum(buffer.evictions().values())
    out.newest_age_s = time.time() - max(moment[0] for moment in buffer.freshness().values())
    db.close()
    return out


def _read(db: Database) -> int:
    """Messages accounted for in the database so far: held, consumed, evicted (there are no duplicates here)."""
    held = db.query("SELECT coalesce(sum(train + heldout), 0) FROM task_counts")[0][0]
    evicted = db.query("SELECT coalesce(sum(count), 0) FROM evictions")[0][0]
    return int(held) + int(evicted)

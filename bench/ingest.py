"""Ingest throughput: the sources into the durable buffer, against bare client loops, in one run.

    .venv/bin/python -m bench.ingest [--records 20000] [--objects 300] [--chars 1000] [--only kafka|s3|delta]

Kafka: a real Kafka-protocol broker (tansu); the reference is a bare kafka-python consume
loop that does no work with the records; taoflow's source polls, parses, dedups, writes
the buffer (SQLite, synchronous=FULL) and commits offsets. S3: a real S3-compatible server
(moto); the reference is a bare boto3 list + get loop; taoflow reads, parses, stores and
checkpoints each object. Delta: a Databricks-shaped inference table (Change Data Feed on) on the
same server, `--versions` appends of `--per-version` rows; the reference is deltalake's own read of
those versions' rows into Arrow (`load_cdf` from version 0); taoflow reads each version's log entry
and added files, parses, stores and checkpoints. Each comparison alternates the bare loop and
taoflow's `--repeat` times (medians: the loopback servers drift by a third between runs). Prints
records/s of each and the ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from bench.lib import cli
from bench.lib.records import SIZE, record

if TYPE_CHECKING:
    from taoflow.daemon.store.state import State

# The clients, services and taoflow are imported in the functions that use them: the S3
# source's parser processes start by importing this module, and should pay only for what they run.

GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 5000}


def fresh_state(tmp: Path) -> State:
    from taoflow.daemon.settings import load_settings
    from taoflow.daemon.store.state import State

    return State(load_settings(None, storage={"state_dir": str(tmp / uuid.uuid4().hex)}))


def bench_kafka(records: int, tmp: Path, *, repeat: int) -> tuple[float, float]:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    from taoflow.connectors.sources.kafka import KafkaConfig, KafkaSource
    from taoflow.daemon.ingest.ingestor import Ingestor
    from taoflow.daemon.ingest.streaming import run_stream
    from tests.support.brokers import tansu_broker

    with tansu_broker() as bootstrap:
        topic = "bench"
        KafkaAdminClient(bootstrap_servers=bootstrap).create_topics([NewTopic(topic, 4, 1)])
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256_000)
        for i in range(records):
            producer.send(topic, record(i))
        producer.flush()

        def bare_run(group: str) -> float:
            consumer = KafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=500,
                **GROUP,
            )
            seen, started = 0, None
            while seen < records:
                batch = consumer.poll(timeout_ms=500)
                if batch and started is None:
                    started = time.perf_counter()  # both loops are timed from their first record: not the group join
                seen += sum(len(messages) for messages in batch.values())
            rate = records / (time.perf_counter() - (started or time.perf_counter()))
            consumer.close()
            return rate

        def taoflow_run(group: str) -> float:
            state = fresh_state(tmp)
            config = KafkaConfig(bootstrap_servers=[bootstrap], group_id=group, topics=[topic], **GROUP)
            source = KafkaSource(config)
            ingestor = Ingestor(state.buffer, source="kafka")
            stop, first = threading.Event(), {}
            original_poll = source.poll

            def timed_poll(**kwargs):  # type: ignore[no-untyped-def]
                items = original_poll(**kwargs)
                if items and "t" not in first:
                    first["t"] = time.perf_counter()
                return items

            source.poll = timed_poll  # type: ignore[method-assign]
            thread = threading.Thread(target=run_stream, args=(source, ingestor, state.buffer), kwargs={"stop": stop})
            thread.start()
            # max(id) is the row count here (rows are only added) and, unlike count(*), costs the loop nothing.
            while (state.db.query("SELECT max(id) FROM prompts")[0][0] or 0) < records:
                time.sleep(0.05)
            rate = records / (time.perf_counter() - first["t"])
            stop.set()
            thread.join()
            state.close()
            return rate

        # Alternated and repeated, each with its own consumer group reading the topic from the start.
        rates = [(bare_run(f"bare-{r}"), taoflow_run(f"taoflow-{r}")) for r in range(repeat)]
        bare, ours = statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)
    return bare, ours


def bench_s3(objects: int, per_object: int, tmp: Path, *, repeat: int) -> tuple[float, float]:
    import boto3

    from taoflow.connectors.sources.s3 import S3Config, S3Source
    from taoflow.daemon.ingest.ingestor import Ingestor
    from taoflow.daemon.ingest.streaming import ingest_objects
    from tests.support.brokers import moto_s3

    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    with moto_s3() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="table")
        for o in range(objects):
            body = b"\n".join(record(o * per_object + r) for r in range(per_object))
            client.put_object(Bucket="table", Key=f"part-{o:05d}.jsonl", Body=body)
        total = objects * per_object

        def bare_run() -> float:
            started = time.perf_counter()
            lines = 0
            for page in client.get_paginator("list_objects_v2").paginate(Bucket="table"):
                for item in page.get("Contents", []):
                    lines += len(client.get_object(Bucket="table", Key=item["Key"])["Body"].read().splitlines())
            assert lines == total
            return total / (time.perf_counter() - started)

        def taoflow_run() -> float:
            state = fresh_state(tmp)
            source = S3Source(S3Config(bucket="table", endpoint_url=endpoint))
            ingestor = Ingestor(state.buffer, source="s3")
            started = time.perf_counter()
            report = ingest_objects(
                source,
                ingestor,
                state.buffer,
                state.db,
                stop=threading.Event(),
                follow=False,
                parse_processes=len(os.sched_getaffinity(0)),
            )
            rate = total / (time.perf_counter() - started)
            assert report.added == total, report
            state.close()
            return rate

        # Alternated and repeated: the loopback server's speed drifts by a third between runs.
        rates = [(bare_run(), taoflow_run()) for _ in range(repeat)]
        bare, ours = statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)
    return bare, ours


def inference_table(start: int, count: int):  # type: ignore[no-untyped-def]
    """Rows of a Databricks inference table holding the same requests and answers as `record`."""
    import pyarrow as pa

    from tests.support.delta_tables import SCHEMA

    rows = []
    for i in range(start, start + count):
        logged = json.loads(record(i))
        rows.append(
            {
                "databricks_request_id": logged["id"],
                "client_request_id": None,
                "timestamp_ms": 1_790_000_000_000 + i,
                "status_code": 200,
                "execution_time_ms": 12,
                "request": json.dumps(logged["request"]),
                "response": json.dumps(logged["response"]),
                "request_metadata": [("endpoint_name", logged["task"])],
            }
        )
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def bench_delta(versions: int, per_version: int, tmp: Path, *, repeat: int) -> tuple[float, float]:
    """The Delta source (every version from 0: each commit's log entry, its added files, parsed and stored) against
    deltalake's own read of the same versions' rows (`load_cdf` from version 0, into Arrow), on the S3 server."""
    import boto3
    import pyarrow as pa
    from deltalake import DeltaTable

    from taoflow.connectors.sources.delta import DeltaConfig, DeltaSource
    from taoflow.daemon.ingest.ingestor import Ingestor
    from taoflow.daemon.ingest.table_follower import ingest_delta
    from tests.support.brokers import moto_s3
    from tests.support.delta_tables import append

    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    with moto_s3() as endpoint:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="tables")
        uri = "s3://tables/serving/inference"
        options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
        cdf = {"delta.enableChangeDataFeed": "true"}  # as Databricks recommends for inference tables
        for v in range(versions):
            append(uri, inference_table(v * per_version, per_version), options, configuration=cdf if v == 0 else None)
        total = versions * per_version

        def bare_run() -> float:
            started = time.perf_counter()
            rows = pa.table(DeltaTable(uri, storage_options=options).load_cdf(starting_version=0)).num_rows
            assert rows == total, rows
            return total / (time.perf_counter() - started)

        def taoflow_run() -> float:
            state = fresh_state(tmp)
            source = DeltaSource(DeltaConfig(uri, endpoint_url=endpoint, start_version=0))
            ingestor = Ingestor(state.buffer, source=source.name)
            started = time.perf_counter()
            report = ingest_delta(
                source,
                ingestor,
                state.buffer,
                state.db,
                stop=threading.Event(),
                follow=False,
                max_versions=versions,
                parse_processes=len(os.sched_getaffinity(0)),
            )
            rate = total / (time.perf_counter() - started)
            assert report.added == total, report
            state.close()
            return rate

        rates = [(bare_run(), taoflow_run()) for _ in range(repeat)]
        bare, ours = statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates)
    return bare, ours


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--per-object", type=int, default=200)
    parser.add_argument("--chars", type=int, default=1000, help="characters of prompt and of answer per record")
    parser.add_argument("--repeat", type=int, default=3, help="alternate the two loops this often (medians)")
    parser.add_argument("--only", choices=["kafka", "s3", "delta"], help="run one source's comparison")
    parser.add_argument("--versions", type=int, default=100, help="delta: table versions (appends) to read")
    parser.add_argument("--per-version", type=int, default=200, help="delta: rows per version")
    args = cli.parse(
        parser,
        argv,
        smoke={"records": 300, "objects": 4, "per_object": 20, "repeat": 1, "versions": 3, "per_version": 20},
    )
    SIZE["chars"] = args.chars
    print(f"records of {len(record(0))} bytes")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "kafka"):
            bare, ours = bench_kafka(args.records, Path(tmp), repeat=args.repeat)
            print(
                f"kafka: bare consume {bare:9.0f} records/s | taoflow source -> buffer {ours:9.0f} records/s "
                f"| ratio {ours / bare:.2f}"
            )
        if args.only in (None, "s3"):
            bare, ours = bench_s3(args.objects, args.per_object, Path(tmp), repeat=args.repeat)
            print(
                f"s3:    bare get     {bare:9.0f} records/s | taoflow source -> buffer {ours:9.0f} records/s "
                f"| ratio {ours / bare:.2f}"
            )
        if args.only in (None, "delta"):
            bare, ours = bench_delta(args.versions, args.per_version, Path(tmp), repeat=args.repeat)
            print(
                f"delta: bare read    {bare:9.0f} records/s | taoflow source -> buffer {ours:9.0f} records/s "
                f"| ratio {ours / bare:.2f}"
            )


if __name__ == "__main__":
    main()

"""The Delta source on tables written by deltalake, on a local path and on a real S3-compatible server (moto over
HTTP): versions, compaction, deletes (erasures), the Change Data Feed, MERGE, schema evolution, VACUUM."""

import threading
import uuid
from datetime import UTC, datetime

import boto3
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from prometheus_client import CollectorRegistry

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.sources.delta import DeltaConfig, DeltaSource
from taoflow.daemon.ingest.ingestor import Ingestor
from taoflow.daemon.ingest.metrics import IngestMetrics
from taoflow.daemon.ingest.table_follower import ingest_delta, table_checkpoint
from taoflow.daemon.store.erasure import erased
from taoflow.daemon.store.registry import Registry
from taoflow.daemon.store.rounds import RoundStore
from tests.support.delta_tables import append, delete_with_deletion_vector, inference_rows, live_request_ids, scenario


class Table:
    """A table location: a local directory, or a prefix of a fresh bucket on the S3 server."""

    def __init__(self, uri, options=None, endpoint=None):
        self.uri = uri
        self.options = options
        self.endpoint = endpoint

    def source(self, **config):
        return DeltaSource(DeltaConfig(self.uri, endpoint_url=self.endpoint, **config))

    def delta(self):
        return DeltaTable(self.uri, storage_options=self.options)


@pytest.fixture(params=["local", "s3"])
def table(request, tmp_path):
    if request.param == "local":
        return Table(str(tmp_path / "inference"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = f"tables-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    return Table(f"s3://{bucket}/serving/inference", options, endpoint)


def ingest(source, state, metrics=None, **kwargs):
    ingestor = Ingestor(state.buffer, source=source.name, metrics=metrics)
    return ingest_delta(
        source, ingestor, state.buffer, state.db, stop=threading.Event(), follow=False, metrics=metrics, **kwargs
    )


def held_ids(state):
    return {r[0] for r in state.db.query("SELECT request_id FROM prompts")}


def test_the_scenario_read_version_by_version(table, state):
    """Four appends, a DELETE of two users' rows, OPTIMIZE, a checkpoint: the buffer holds the table's live rows,
    every one of them, and nothing from the log."""
    erased_ids = scenario(table.uri, table.options)
    report = ingest(table.source(start_version=0), state)
    live = live_request_ids(table.uri, table.options)
    assert len(live) == 198 and held_ids(state) == live
    assert not held_ids(state) & set(erased_ids)
    assert sum(report.dead_lettered.values()) == 0 and state.buffer.stats().dead_letters == 0
    assert report.versions == 6 and table_checkpoint(state.db, table.source()).version == 5
    # The DELETE rewrote two files: their kept rows come again as duplicates; OPTIMIZE read nothing.
    assert (report.added, report.duplicates) == (200, 98)
    assert (report.erased.deleted, report.erased.tombstoned) == (2, 0)


def test_first_start_reads_the_snapshot_and_compaction_reads_nothing(table, state):
    for k in range(4):
        append(table.uri, inference_rows(k * 50, 50), table.options)
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    first = ingest(table.source(), state, metrics)
    assert (first.added, first.versions) == (200, 1)
    table.delta().delete("databricks_request_id IN ('req-7', 'req-120')")
    second = ingest(table.source(), state, metrics)
    assert (second.added, second.erased.deleted) == (0, 2) and len(held_ids(state)) == 198
    table.delta().optimize.compact()
    table.delta().create_checkpoint()
    bytes_before = registry.get_sample_value("taoflow_source_read_bytes_total", {"source": "delta"})
    third = ingest(table.source(), state, metrics)
    assert (third.versions, third.read, third.bytes_read) == (1, 0, 0)  # OPTIMIZE: no data file downloaded
    assert registry.get_sample_value("taoflow_source_read_bytes_total", {"source": "delta"}) == bytes_before
    assert registry.get_sample_value("taoflow_source_table_version", {"source": "delta"}) == 5
    assert registry.get_sample_value("taoflow_source_erasures_total", {"source": "delta", "kind": "deleted"}) == 2
    assert held_ids(state) == live_request_ids(table.uri, table.options)


def test_change_data_feed_deletes_read_only_the_change_files(table, state):
    scenario(table.uri, table.options, change_data_feed=True)
    report = ingest(table.source(start_version=0), state)
    assert held_ids(state) == live_request_ids(table.uri, table.options) and len(held_ids(state)) == 198
    # The DELETE's commit is read from its change file alone: the rewritten rows are not read again.
    assert (report.added, report.duplicates, report.erased.deleted) == (200, 0, 2)


def test_merge_updates_are_not_erasures_and_merge_deletes_are(tmp_path, state):
    uri = str(tmp_path / "t")
    append(uri, inference_rows(0, 20))
    ingest(DeltaSource(DeltaConfig(uri)), state)
    changes = inference_rows(0, 4)  # req-0..3: req-0 and req-1 get a new answer, req-2 and req-3 are deleted
    (
        DeltaTable(uri)
        .merge(
            changes, predicate="t.databricks_request_id = s.databricks_request_id", source_alias="s", target_alias="t"
        )
        .when_matched_update(
            {"response": '\'{"choices": [{"message": {"content": "corrected"}}]}\''},
            predicate="s.databricks_request_id IN ('req-0', 'req-1')",
        )
        .when_matched_delete(predicate="s.databricks_request_id IN ('req-2', 'req-3')")
        .execute()
    )
    report = ingest(DeltaSource(DeltaConfig(uri)), state)
    assert report.erased.deleted == 2
    assert held_ids(state) == {f"req-{i}" for i in range(20)} - {"req-2", "req-3"}


def test_schema_evolution_keeps_the_rows_a_later_delete_rewrites(tmp_path, state):
    uri = str(tmp_path / "t")
    append(uri, inference_rows(0, 10))
    wider = inference_rows(10, 10).append_column("served_entity_id", pa.array(["ent-1"] * 10))
    append(uri, wider, schema_mode="merge")
    DeltaTable(uri).delete("databricks_request_id = 'req-3'")
    report = ingest(DeltaSource(DeltaConfig(uri, start_version=0)), state)
    assert report.erased.deleted == 1 and held_ids(state) == {f"req-{i}" for i in range(20)} - {"req-3"}


def test_a_vacuumed_removed_file_is_erased_by_origin(tmp_path, state):
    uri = str(tmp_path / "t")
    append(uri, inference_rows(0, 10))
    ingest(DeltaSource(DeltaConfig(uri)), state)
    DeltaTable(uri).delete("databricks_request_id = 'req-4'")
    DeltaTable(uri).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    report = ingest(DeltaSource(DeltaConfig(uri)), state)
    assert report.erased.deleted == 1 and held_ids(state) == {f"req-{i}" for i in range(10)} - {"req-4"}


def test_a_delete_whose_files_are_all_vacuumed_is_told_from_the_live_table(tmp_path, state, caplog):
    uri = str(tmp_path / "t")
    append(uri, inference_rows(0, 10))
    append(uri, inference_rows(10, 10))
    ingest(DeltaSource(DeltaConfig(uri)), state)
    DeltaTable(uri).delete("databricks_request_id IN ('req-4', 'req-15')")  # rewrites both files
    append(uri, inference_rows(20, 10))
    assert DeltaTable(uri).optimize.compact()["numFilesRemoved"] == 2  # rewrites the rewrite
    DeltaTable(uri).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    report = ingest(DeltaSource(DeltaConfig(uri)), state)
    assert report.erased.deleted == 2 and held_ids(state) == {f"req-{i}" for i in range(30)} - {"req-4", "req-15"}
    assert "reading the live table" in caplog.text and "matched by origin" in caplog.text


def test_a_deleted_malformed_row_takes_its_dead_letter_with_it(tmp_path, state):
    uri = str(tmp_path / "t")
    rows = inference_rows(0, 5).to_pylist()
    rows[2]["request"] = '{"messages": [{"role": "user", "content": "cut off'
    append(uri, pa.Table.from_pylist(rows, schema=inference_rows(0, 1).schema))
    assert sum(ingest(DeltaSource(DeltaConfig(uri)), state).dead_lettered.values()) == 1
    DeltaTable(uri).delete("databricks_request_id = 'req-2'")
    report = ingest(DeltaSource(DeltaConfig(uri)), state)
    assert report.erased.dead_letters == 1 and state.buffer.stats().dead_letters == 0


def test_an_erasure_after_training_is_a_tombstone_with_its_adapter(tmp_path, state):
    uri = str(tmp_path / "t")
    append(uri, inference_rows(0, 30))
    ingest(DeltaSource(DeltaConfig(uri)), state)
    rounds = RoundStore(state.db, tmp_path / "rounds")
    started = rounds.start("m")
    taken = state.buffer.training_prompts(10)
    Registry(state.db).register(
        version="m-r0001", model="m", parent=None, base_model="b", base_digest="d", uri="file:///a", manifest={}
    )
    state.db.query("UPDATE rounds SET version = 'm-r0001' WHERE id = ?", (started.id,))
    state.buffer.mark_consumed([p.id for p in taken], started.id)
    victim = taken[0].record.request_id
    DeltaTable(uri).delete(f"databricks_request_id = '{victim}'")
    report = ingest(DeltaSource(DeltaConfig(uri)), state)
    assert report.erased.tombstoned == 1
    assert [(e.request_id, e.version) for e in erased(state.db)] == [(victim, "m-r0001")]
    later = {p.record.request_id for p in state.buffer.training_prompts(100)}
    assert victim not in later and victim not in held_ids(state)
    append(uri, inference_rows(int(victim.split("-")[1]), 1))  # the same request logged again
    assert ingest(DeltaSource(DeltaConfig(uri)), state).added == 0


def test_deletion_vectors_are_honoured_in_deletes_and_in_a_snapshot(tmp_path, settings):
    from taoflow.daemon.store.state import State

    uri = str(tmp_path / "t")
    append(uri, inference_rows(0, 10), configuration={"delta.enableDeletionVectors": "true"})
    following = State(settings)
    ingest(DeltaSource(DeltaConfig(uri)), following)
    delete_with_deletion_vector(uri, [2, 5])  # req-2 and req-5, marked in the file's deletion vector
    live = {f"req-{i}" for i in range(10)} - {"req-2", "req-5"}
    scanned = pa.RecordBatchReader.from_stream(DeltaTable(uri).scan()).read_all()  # deltalake's own reader agrees
    assert set(scanned.column("databricks_request_id").to_pylist()) == live
    report = ingest(DeltaSource(DeltaConfig(uri)), following)
    assert (report.erased.deleted, report.added, report.read) == (2, 0, 0) and held_ids(following) == live
    following.close()
    # A first start on the table as it is now: the snapshot reads the file without the rows its vector marks.
    fresh = State(
        settings.model_copy(update={"storage": settings.storage.model_copy(update={"state_dir": tmp_path / "s2"})})
    )
    assert ingest(DeltaSource(DeltaConfig(uri)), fresh).added == 8 and held_ids(fresh) == live
    fresh.close()


def test_a_table_without_prompt_columns_is_one_clear_error(tmp_path, state):
    uri = str(tmp_path / "t")
    append(uri, pa.table({"user": ["a", "b"], "clicks": [1, 2]}))
    with pytest.raises(ConfigurationError, match=r"no column a prompt can come from.*'clicks', 'user'"):
        ingest(DeltaSource(DeltaConfig(uri)), state)
    assert state.buffer.stats().dead_letters == 0


def test_start_timestamp_skips_what_came_before(tmp_path, state):
    uri = str(tmp_path / "t")
    append(uri, inference_rows(0, 5))
    history = DeltaTable(uri).history()
    append(uri, inference_rows(5, 5))
    second = max(h["timestamp"] for h in DeltaTable(uri).history())
    assert second > history[0]["timestamp"]
    since = datetime.fromtimestamp(second / 1000, tz=UTC).isoformat()
    ingest(DeltaSource(DeltaConfig(uri, start_timestamp=since)), state)
    assert held_ids(state) == {f"req-{i}" for i in range(5, 10)}


def test_a_stop_between_files_resumes_without_loss_or_duplicates(tmp_path, state):
    uri = str(tmp_path / "t")
    for k in range(6):
        append(uri, inference_rows(k * 10, 10))
    source = DeltaSource(DeltaConfig(uri, start_version=0))
    stop = threading.Event()
    ingestor = Ingestor(state.buffer, source=source.name)
    calls = {"n": 0}
    store = ingestor.store

    def store_then_stop(*args, **kwargs):
        store(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            stop.set()

    ingestor.store = store_then_stop
    ingest_delta(source, ingestor, state.buffer, state.db, stop=stop, follow=False, prefetch=1)
    assert len(held_ids(state)) == 20 and table_checkpoint(state.db, source) is None  # two files of six
    rest = ingest(source, state)
    assert held_ids(state) == {f"req-{i}" for i in range(60)}
    assert (rest.read, rest.duplicates, rest.versions) == (40, 0, 6)  # the stored files are not read again


def test_an_unreachable_store_is_an_outage_and_a_missing_table_a_setting(s3_endpoint, tmp_path):
    from taoflow.connectors.errors import TemporaryError
    from tests.support.ports import free_port

    down = DeltaSource(DeltaConfig("s3://tables/inference", endpoint_url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(TemporaryError, match="cannot read the Delta table") as outage:
        down.latest_version()
    assert "\x1b" not in str(outage.value) and "\n" not in str(outage.value)
    with pytest.raises(ConfigurationError, match="no Delta table at"):
        DeltaSource(DeltaConfig(str(tmp_path / "nothing-here"))).latest_version()

"""From files to the buffer: everything read is buffered, folded as a duplicate or dead-lettered."""

import gzip
import json

from prometheus_client import CollectorRegistry

from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.sources.jsonl import JsonlSource
from taoflow.connectors.sources.redaction import Redactor
from taoflow.daemon.cli.demo import SAMPLES
from taoflow.daemon.ingest.configured import build_ingestor
from taoflow.daemon.ingest.ingestor import Ingestor
from taoflow.daemon.ingest.metrics import IngestMetrics
from taoflow.daemon.service.state_metrics import StateCollector
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.state import State
from taoflow.policies.ingest_filter import IngestFilter


def line(i: int, text: str) -> str:
    return json.dumps({"id": f"r{i}", "task": "t", "request": {"messages": [{"role": "user", "content": text}]}})


def test_malformed_lines_are_dead_lettered_and_nothing_is_lost(tmp_path, state):
    logs = tmp_path / "logs"
    logs.mkdir()
    good = [line(i, f"question {i}") for i in range(20)]
    bad = [
        "{truncated",
        '["list"]',
        json.dumps({"request": {"messages": []}}),
        "\udcff".encode("utf-8", "surrogatepass"),
    ]
    with (logs / "a.jsonl").open("wb") as fh:
        for row in good[:10] + bad[:3]:
            fh.write(row.encode() + b"\n")
        fh.write(bad[3] + b"\n")
    blob = gzip.compress("\n".join(good[10:]).encode())
    (logs / "b.jsonl.gz").write_bytes(blob)
    (logs / "c.jsonl.gz").write_bytes(blob[: len(blob) // 2])  # truncated upload
    (logs / "ignored.txt").write_text("not a log")
    report = Ingestor(state.buffer, source="jsonl").run(JsonlSource([logs]).read())
    assert report.added == 20
    assert report.duplicates >= 0
    assert report.dead_lettered == {
        "invalid_json": 1,
        "not_an_object": 1,
        "no_messages": 1,
        "invalid_encoding": 1,
        "truncated_gzip": 1,
    }
    dead = state.buffer.dead_letters()
    assert {d.origin.rsplit("/", 1)[-1] for d in dead} >= {"a.jsonl:11", "a.jsonl:12", "a.jsonl:13", "a.jsonl:14"}
    assert state.buffer.stats().total + report.duplicates == report.read - sum(report.dead_lettered.values())


def test_reingesting_the_same_files_adds_nothing(tmp_path, state):
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(line(i, f"q{i}") for i in range(5)))
    ingest = Ingestor(state.buffer, source="jsonl")
    assert ingest.run(JsonlSource([path]).read()).added == 5
    again = ingest.run(JsonlSource([path]).read())
    assert (again.added, again.duplicates) == (0, 5)


def test_redaction_happens_before_storage_and_long_prompts_are_skipped(tmp_path, state):
    path = tmp_path / "a.jsonl"
    path.write_text(line(1, "my mail is a@b.io") + "\n" + line(2, "x" * 100) + "\n")
    report = Ingestor(
        state.buffer, source="jsonl", redactor=Redactor(["emails"]), rules=IngestFilter(max_prompt_chars=50)
    ).run(JsonlSource([path]).read())
    assert report.skipped == {"too_long": 1}
    assert not report.dead_lettered
    (stored,) = state.buffer.training_prompts(10) or state.buffer.heldout()
    assert stored.record.last_user_text == "my mail is [EMAIL]"
    raw = state.db.query("SELECT record FROM prompts")[0][0]
    assert "a@b.io" not in raw


def test_shipped_samples(state):
    report = Ingestor(state.buffer, source="jsonl").run(
        JsonlSource([SAMPLES / "arithmetic.jsonl", SAMPLES / "json_extract.jsonl"]).read()
    )
    assert report.added == 460
    assert report.duplicates == 2
    assert sum(report.dead_lettered.values()) == 4
    stats = state.buffer.stats()
    assert set(stats.tasks) == {"arithmetic", "json_extract"}
    assert all(20 <= c.heldout <= 64 for c in stats.tasks.values())


def test_the_shipped_agent_samples_are_stored_whole_once_rounds_learn_tool_use(state):
    from taoflow.policies.ingest_filter import IngestFilter

    logs = [SAMPLES / "tool_use.jsonl"]
    skipped = Ingestor(state.buffer, source="jsonl").run(JsonlSource(logs).read())  # tool_call_parser none
    assert skipped.added == 0 and skipped.skipped == {"unsupported_tools": 160}
    report = Ingestor(state.buffer, source="jsonl", rules=IngestFilter(tools=True)).run(JsonlSource(logs).read())
    assert report.added == 160 and not report.dead_lettered
    records = [p.record for p in state.buffer.training_prompts(200)]
    assert all(len(r.tools) == 3 and r.tool_choice == "required" for r in records)
    assert all(sum(bool(m.tool_calls) for m in r.messages) == 2 for r in records)  # two earlier calls each
    assert all(r.messages[-1].role == "user" for r in records)


def test_filters_task_map_field_map_and_metrics(tmp_path, state):
    from prometheus_client import CollectorRegistry

    rows = [
        {
            "meta": {"id": f"x{i}", "app": "svc-a", "code": 200 if i % 4 else 500},
            "body": {"chat": [{"role": "user", "content": f"question {i}"}]},
        }
        for i in range(40)
    ]
    rows.append({"meta": {"id": "no-chat"}, "body": {}})
    path = tmp_path / "custom.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    registry = CollectorRegistry()
    report = Ingestor(
        state.buffer,
        source="custom",
        rules=IngestFilter(keep_status=frozenset({200}), sample_rates={"support": 0.5}, task_map={"svc-a": "support"}),
        field_map={"request_id": "meta.id", "task": "meta.app", "messages": "body.chat", "status_code": "meta.code"},
        metrics=IngestMetrics(registry),
    ).run(JsonlSource([path]).read())
    assert report.skipped["status_code"] == 10
    assert 5 <= report.skipped["sampled_out"] <= 25
    assert report.added == 30 - report.skipped["sampled_out"]
    assert report.dead_lettered == {"no_messages": 1}
    assert set(state.buffer.stats().tasks) == {"support"}
    sample = registry.get_sample_value
    assert sample("taoflow_records_ingested_total", {"source": "custom"}) == report.added
    assert sample("taoflow_records_skipped_total", {"source": "custom", "reason": "status_code"}) == 10
    assert sample("taoflow_records_dead_lettered_total", {"source": "custom", "reason": "no_messages"}) == 1


def test_ingest_progress_is_one_line_per_interval_and_quiet_when_idle(caplog):
    from collections import Counter

    from taoflow.daemon.ingest.ingestor import IngestReport
    from taoflow.daemon.ingest.streaming import IngestProgress

    progress = IngestProgress("kafka", every_s=0.0)
    with caplog.at_level("INFO", logger="taoflow.daemon.ingest.streaming"):
        progress.report(IngestReport(read=10, added=7, duplicates=1, dead_lettered=Counter(bad=2)), "lag 5 records")
        progress.report(IngestReport(read=10, added=7, duplicates=1, dead_lettered=Counter(bad=2)), "lag 0 records")
        progress.report(IngestReport(read=12, added=9, duplicates=1, dead_lettered=Counter(bad=2)), "lag 0 records")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # nothing read between the first two reports: no line
    assert lines[0].startswith("kafka: read 10 records in ")
    assert lines[0].endswith("(added 7, duplicates 1, evicted 0, skipped 0, dead-lettered 2); lag 5 records")
    assert "read 2 records" in lines[1] and "added 2," in lines[1]


def labelled(i: int, task: str, text: str) -> SourceItem:
    record = {"id": f"r{i}", "task": task, "request": {"messages": [{"role": "user", "content": text}]}}
    return SourceItem(json.dumps(record).encode(), f"logs:{i}")


def test_a_flood_of_task_labels_leaves_the_real_task_its_share_and_the_round_its_prompts(tmp_path):
    """Finding: 1 000 one-prompt task labels left a real task holding 736 prompts 1 of them, and the next round took
    0 of 64 from it; every label was a share of the buffer and ~7 series of /metrics."""
    settings = load_settings(
        None,
        storage={"state_dir": str(tmp_path / "state")},
        score={"tasks": {"support": [{"type": "json_schema", "params": {"schema": {"type": "object"}}}]}},
        ingest={"heldout_fraction": 0.0, "buffer_cap": 1000},
    )
    state = State(settings)
    real = [labelled(i, "support", f"how do I reset my password, case {i}?") for i in range(736)]
    flood = [labelled(10_000 + i, f"label-{i}", f"anything at all {i}") for i in range(1000)]
    report = build_ingestor(settings, state, "logs", metrics=IngestMetrics(CollectorRegistry())).run(real + flood)
    assert (report.added, report.relabelled) == (1736, 1000)
    tasks = state.buffer.stats().tasks
    assert set(tasks) == {"support", "default"} and tasks["support"].new == 500  # an equal share of the cap each
    taken = state.buffer.training_prompts(64)
    assert sum(p.record.task == "support" for p in taken) == 32
    registry = CollectorRegistry()
    registry.register(StateCollector(state.db, state.buffer, state.registry, "m"))
    labels = {s.labels["task"] for m in registry.collect() for s in m.samples if "task" in s.labels}
    assert labels == {"support", "default"}
    state.close()
    skipping = load_settings(
        None, **{**settings_of(tmp_path / "skip"), "ingest": {"tasks": ["support"], "unknown_task": "skip"}}
    )
    state = State(skipping)
    report = build_ingestor(skipping, state, "logs").run(real[:10] + flood[:10] + [labelled(1, "x" * 129, "long")])
    assert report.added == 10 and report.skipped == {"unknown_task": 11}
    state.close()


def settings_of(directory) -> dict:
    return {"storage": {"state_dir": str(directory)}}

"""Erasures on a real state database: every copy goes, what a round trained on is kept as a tombstone with its
adapter, and an erased prompt never comes back."""

import json
import shutil
import stat

import pytest
from prometheus_client import CollectorRegistry

from taoflow.connectors.errors import InvalidRequest
from taoflow.connectors.protocols import Completion
from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.service.state_metrics import StateCollector
from taoflow.daemon.store.buffer import DeadRow, PromptBuffer
from taoflow.daemon.store.erasure import (
    ErasureKey,
    erase,
    erased,
    erased_request_ids,
    erasure_counts,
    forget,
    trained_by_version,
)
from taoflow.daemon.store.registry import Registry
from taoflow.daemon.store.retention import RetentionPolicy, apply_retention
from taoflow.daemon.store.round_files import RoundFiles, RoundPrompts
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.storage import Database
from taoflow.daemon.store.summaries import PrepareSummary


def record(i, text=None):
    return PromptRecord(f"r{i}", "t", (Message("user", text or f"question number {i}"),))


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "state.db")
    yield database
    database.close()


def trained_round(db, tmp_path, buffer, ids, version="m-r0001"):
    """A round that trained on `ids` and registered `version` (as a round's register step does)."""
    rounds = RoundStore(db, tmp_path / "rounds")
    started = rounds.start("m")
    rounds.complete_step(started.id, "prepare", PrepareSummary(prompts=0))
    Registry(db).register(
        version=version, model="m", parent=None, base_model="b", base_digest="d", uri="file:///a", manifest={}
    )
    db.query("UPDATE rounds SET version = ? WHERE id = ?", (version, started.id))
    buffer.mark_consumed(ids, started.id)
    return started.id


def test_untrained_heldout_and_trained_prompts_go_and_never_come_back(db, tmp_path):
    buffer = PromptBuffer(db, heldout_fraction=0.5, heldout_max_per_task=3)
    buffer.add_many([(record(i), f"origin-{i}") for i in range(20)], source="s")
    heldout = [p.record.request_id for p in buffer.heldout()]
    assert len(heldout) == 3
    train = buffer.training_prompts(100)
    round_id = trained_round(db, tmp_path, buffer, [p.id for p in train[:5]])
    trained = [p.record.request_id for p in train[:5]]
    untrained = [p.record.request_id for p in train[5:7]]
    with db.transaction() as conn:
        report = erase(conn, [ErasureKey(r) for r in [*trained[:2], *untrained, heldout[0], "never-seen"]], reason="t")
    assert (report.deleted, report.tombstoned, report.blocked) == (3, 2, 1)
    stats = buffer.stats().tasks["t"]
    assert (stats.train, stats.heldout, stats.new) == (20 - 3 - 4, 2, 20 - 3 - 5 - 2)
    left = {p.record.request_id for p in buffer.training_prompts(100)} | {p.record.request_id for p in buffer.heldout()}
    assert not left & {*trained[:2], *untrained, heldout[0]}
    listed = erased(db)
    assert {e.request_id for e in listed} == set(trained[:2])
    assert {(e.round_id, e.version, e.state) for e in listed} == {(round_id, "m-r0001", "candidate")}
    assert trained_by_version(db) == {("m-r0001", "candidate"): 2}
    assert erasure_counts(db) == {"trained": 2, "untrained": 4}
    scraped = CollectorRegistry()
    scraped.register(StateCollector(db, buffer, Registry(db), "m"))
    labels = {"version": "m-r0001", "state": "candidate"}
    assert scraped.get_sample_value("taoflow_adapter_erased_prompts", labels) == 2
    assert scraped.get_sample_value("taoflow_erased_prompts", {"when": "untrained"}) == 4
    # Seen again — the same request, or the same prompt under another id, or the never-seen one: kept out.
    again = [(record(int(r[1:])), None) for r in [*trained[:2], *untrained]]
    again += [
        (record(900, text=f"question number {untrained[0][1:]}"), None),
        (PromptRecord("never-seen", "t", (Message("user", "new text"),)), None),
    ]
    result = buffer.add_many(again, source="s")
    assert (result.added, result.duplicates) == (0, 6)
    with db.transaction() as conn:  # erasing again changes nothing and records nothing twice
        repeat = erase(conn, [ErasureKey(r) for r in [*trained[:2], "never-seen"]], reason="t")
    assert repeat.total == 0 and erasure_counts(db) == {"trained": 2, "untrained": 4}


def test_retired_prompts_and_dead_letters_are_erased_too(db, tmp_path):
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    buffer.add_many([(record(i), None) for i in range(10)], source="s")
    round_id = trained_round(db, tmp_path, buffer, [p.id for p in buffer.training_prompts(4)])
    db.query("UPDATE rounds SET status = 'done', updated_at = 0 WHERE id = ?", (round_id,))
    assert apply_retention(db, RetentionPolicy(consumed_text_days=1)).texts_dropped == 4
    retired = [r[0] for r in db.query("SELECT request_id FROM retired_prompts")]
    buffer.add_rows([], source="kafka", dead=[DeadRow("t/0/5", "invalid_json", "", b'{"id": "r77", "x": ')])
    with db.transaction() as conn:
        report = erase(conn, [ErasureKey(retired[0])], reason="t", dead_origins=[("kafka", "t/0/5")])
    assert (report.tombstoned, report.dead_letters) == (1, 1)
    assert [e.request_id for e in erased(db)] == [retired[0]]
    assert buffer.stats().dead_letters == 0


def test_a_replaced_text_goes_but_its_request_id_stays_free(db):
    """A row updated in its source with new text (same request id): the old prompt goes, the new one may come."""
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    old = record(1, text="my card number is 4111 1111 1111 1111, why was it declined?")
    buffer.add_many([(old, None)], source="s")
    with db.transaction() as conn:
        report = erase(conn, [ErasureKey(prompt_hash=old.prompt_hash)], reason="row updated")
    assert report.deleted == 1
    new = record(1, text="why was my card declined?")
    assert buffer.add_many([(new, None), (old, None)], source="s").added == 1
    assert [p.record.messages[0].content for p in buffer.training_prompts(10)] == ["why was my card declined?"]


def test_forget_by_request_id_and_by_text(db, tmp_path):
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    texts = ["Hello, I am Jane Roe and my order is late", "Please cancel order 17 for Jane Roe", "A third question"]
    buffer.add_many([(record(i, t), None) for i, t in enumerate(texts)], source="s")
    buffer.add_rows([], source="kafka", dead=[DeadRow("t/0/9", "bad_message", "", b'{"content": "Jane Roe \\u00e9"')])
    # A response or metadata that holds the text is not a match: only what the model is asked.
    with_answer = PromptRecord("r9", "t", (Message("user", "unrelated question"),), response="Jane Roe asked this")
    buffer.add_many([(with_answer, None)], source="s")
    with pytest.raises(InvalidRequest, match="at least"):
        forget(db, rounds_dir=tmp_path / "rounds", texts=["Jane"], reason="too short")
    with pytest.raises(InvalidRequest, match="more than the limit of 1"):
        forget(db, rounds_dir=tmp_path / "rounds", texts=["Jane Roe"], reason="t", limit=1)
    dry = forget(db, rounds_dir=tmp_path / "rounds", texts=["Jane Roe"], reason="t", dry_run=True)
    assert (dry.deleted, dry.dead_letters) == (2, 1)
    assert buffer.stats().tasks["t"].train == 4 and buffer.stats().dead_letters == 1  # a dry run changes nothing
    report = forget(
        db, rounds_dir=tmp_path / "rounds", texts=["Jane Roe"], request_ids=["r2", "r404"], reason="ticket 12"
    )
    assert (report.deleted, report.dead_letters, report.blocked) == (3, 1, 1)
    assert [p.record.request_id for p in buffer.training_prompts(10)] == ["r9"]
    assert buffer.add_many([(record(0, texts[0]), None), (record(404), None)], source="s").added == 0


def test_a_round_under_way_records_what_it_trained_on_before_the_erasure(db, tmp_path):
    """Prompts a round took, then erased while it ran: those its training skipped (erased before it trained)
    stay plain erasures; those erased after its training began become its tombstones when it registers."""
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    buffer.add_many([(record(i), None) for i in range(6)], source="s")
    taken = buffer.training_prompts(6)
    ids = [p.id for p in taken]
    before, after = taken[0].record.request_id, taken[1].record.request_id
    forget(db, rounds_dir=tmp_path / "rounds", request_ids=[before, after], reason="while the round ran")
    assert erased_request_ids(db, [p.record.request_id for p in taken]) == {before, after}
    rounds = RoundStore(db, tmp_path / "rounds")
    started = rounds.start("m")
    buffer.mark_consumed(ids, started.id, not_trained=[before])  # the train step skipped `before`
    assert {e.request_id for e in erased(db)} == {after}
    assert erasure_counts(db) == {"trained": 1, "untrained": 1}
    assert buffer.stats().tasks["t"].new == 0 and buffer.stats().tasks["t"].train == 4


def test_the_files_of_rounds_that_took_an_erased_prompt_lose_it(db, tmp_path):

    from taoflow.connectors.protocols import Completion
    from taoflow.daemon.round.parts import TaskScorers
    from taoflow.daemon.round.stages import score_candidates
    from taoflow.daemon.settings import SandboxSettings, ScorerSpec
    from taoflow.daemon.store.round_files import RoundFiles, RoundPrompts

    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    buffer.add_many([(record(i, f"private question {i}"), None) for i in range(4)], source="s")
    taken = buffer.training_prompts(4)
    rounds = RoundStore(db, tmp_path / "rounds")
    work = rounds.start("m").work_dir
    files = RoundFiles(work)
    files.write_prompts(RoundPrompts(ids=[p.id for p in taken], champion=None))
    prompts = [p.record for p in taken]
    outputs = [[Completion(f"answer to {p.request_id}", 3, True)] for p in prompts]
    files.write_candidates(prompts, outputs)
    length = [ScorerSpec(type="length", params={"max_chars": 1000})]
    scorers = TaskScorers({}, length, sandbox=SandboxSettings(enabled=False))
    scored = score_candidates(prompts, files.candidates(), scorers)
    files.write_scored(scored)
    victim = prompts[2].request_id
    forget(db, rounds_dir=tmp_path / "rounds", request_ids=[victim], reason="t")
    assert victim not in files.candidates()
    left = [r.request_id for r, _ in files.scored()]
    assert left == [p.request_id for p in prompts if p.request_id != victim]
    assert "private question 2" not in (work / "scored.jsonl").read_text()


def on_disk(directory, needle: str) -> list[str]:
    """The files under `directory` that hold `needle` (as written, or JSON-escaped as a record stores it)."""
    forms = {needle.encode(), json.dumps(needle)[1:-1].encode()}
    return [str(f) for f in directory.rglob("*") if f.is_file() and any(form in f.read_bytes() for form in forms)]


def test_after_an_erasure_no_byte_of_the_text_is_left_in_the_database_its_wal_or_the_rounds_files(tmp_path):
    """Finding: with the daemon running, the WAL kept two copies of an erased text (never truncated), and the
    database file held it until a checkpoint."""
    secret = "Zyxwv private text 4711"
    db = Database(tmp_path / "state" / "state.db")  # its background checkpointer runs, as the daemon's does
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    buffer.add_many([(record(i, f"{secret} number {i}" if i < 3 else None), None) for i in range(40)], source="s")
    taken = buffer.training_prompts(40)
    rounds = RoundStore(db, tmp_path / "state" / "rounds")
    files = RoundFiles(rounds.start("m").work_dir)
    files.write_prompts(RoundPrompts(ids=[p.id for p in taken], champion=None))
    files.write_candidates([p.record for p in taken], [[Completion("an answer", 2, True)] for _ in taken])
    assert on_disk(tmp_path / "state", secret)  # the text is there: in the WAL, the rounds' files
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "state" / "rounds").rglob("*")}
    assert modes == {"round-00001": 0o700, "prompts.json": 0o600, "candidates.jsonl": 0o600}, modes
    reader = Database(tmp_path / "state" / "state.db")  # another connection reading meanwhile (a scrape)
    reader.query("SELECT count(*) FROM prompts")
    report = forget(db, rounds_dir=tmp_path / "state" / "rounds", texts=[secret], reason="subject's request")
    assert report.deleted == 3 and report.checkpointed and report.unscrubbed == []
    assert on_disk(tmp_path / "state", secret) == []
    assert buffer.stats().total == 37
    reader.close()
    db.close()


def test_rounds_stored_with_a_relative_directory_are_found_from_anywhere_and_a_missing_one_is_reported(
    tmp_path, monkeypatch
):
    """Finding: a round whose work_dir was stored relative (a relative state_dir, as the demo's) was skipped
    silently when `forget` ran from another directory, and the erasure reported success."""
    monkeypatch.chdir(tmp_path)
    db = Database(tmp_path / "state" / "state.db")
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    buffer.add_many([(record(i, f"private question {i}"), None) for i in range(4)], source="s")
    taken = buffer.training_prompts(4)
    rounds = RoundStore(db, tmp_path / "state" / "rounds")
    for _ in range(2):
        files = RoundFiles(rounds.start("m").work_dir)
        files.write_prompts(RoundPrompts(ids=[p.id for p in taken], champion=None))
        files.write_candidates([p.record for p in taken], [[Completion("an answer", 2, True)] for _ in taken])
    # The first as an older version stored it (relative to where that process ran); the second's files are gone.
    db.query("UPDATE rounds SET work_dir = 'state/rounds/round-00001' WHERE id = 1")
    shutil.rmtree(tmp_path / "state" / "rounds" / "round-00002")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    report = forget(db, rounds_dir=tmp_path / "state" / "rounds", request_ids=["r1"], reason="t")
    assert report.unscrubbed == [str(tmp_path / "state" / "rounds" / "round-00002")]
    assert "private question 1" not in (tmp_path / "state" / "rounds" / "round-00001" / "candidates.jsonl").read_text()
    assert (
        RoundStore(db, tmp_path / "state" / "rounds").get(1).work_dir == tmp_path / "state" / "rounds" / "round-00001"
    )
    db.close()


def test_a_text_matching_a_large_share_of_a_task_is_refused_and_a_dry_run_shows_what_it_matches(db, tmp_path):
    """Finding: an 8-character text matching all 197 prompts of a task passed at the default limit."""
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    rows = [PromptRecord(f"s{i}", "support", (Message("user", f"Hello team, ticket {i} is open"),)) for i in range(197)]
    buffer.add_many([(r, None) for r in rows], source="s")
    with pytest.raises(InvalidRequest, match=r"text 1 matches 197 of the 197 prompts of task 'support'"):
        forget(db, rounds_dir=tmp_path / "rounds", texts=["Hello team"], reason="t", dry_run=True)
    dry = forget(db, rounds_dir=tmp_path / "rounds", texts=["ticket 19"], reason="t", dry_run=True)
    assert dry.deleted == 8 and len(dry.sample) == 3  # 19 and 190-196: 8 of 197, under a quarter
    assert all(line.startswith("[support] Hello team, ticket 19") for line in dry.sample)
    wide = forget(db, rounds_dir=tmp_path / "rounds", texts=["Hello team"], reason="t", max_share=1.0, dry_run=True)
    assert wide.deleted == 197 and buffer.stats().total == 197  # allowed when said, and a dry run changes nothing

import pytest

from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.store.buffer import DeadRow, PromptBuffer
from taoflow.daemon.store.storage import Database


def rec(i: int, text: str | None = None, task: str = "math") -> PromptRecord:
    return PromptRecord(f"req-{i}", task, (Message("user", text or f"What is {i} + 1?"),))


@pytest.fixture
def buffer(tmp_path):
    db = Database(tmp_path / "b.db")
    yield PromptBuffer(db, heldout_fraction=0.25, heldout_max_per_task=1000)
    db.close()


def test_dedup_by_request_id_and_by_normalised_prompt(buffer):
    first = buffer.add_many([(rec(1), None), (rec(2), None)], source="t")
    assert (first.added, first.duplicates) == (2, 0)
    again = buffer.add_many(
        [
            (rec(1), None),  # same request id
            (rec(3, "  what IS 2 +   1? "), None),  # same prompt as req-2 up to case and spacing
            (rec(4, "What is 5 + 1?"), None),
        ],
        source="t",
    )
    assert (again.added, again.duplicates) == (1, 2)
    assert buffer.stats().total == 3


def test_origin_is_kept_for_provenance(buffer):
    buffer.add_many([(rec(1), "kafka:topic/0/17")], source="kafka")
    (row,) = buffer._db.query("SELECT origin, source FROM prompts")
    assert tuple(row) == ("kafka:topic/0/17", "kafka")


def test_heldout_prompts_never_reach_training(buffer):
    buffer.add_many([(rec(i), None) for i in range(400)], source="t")
    stats = buffer.stats().tasks["math"]
    assert 60 < stats.heldout < 140
    assert stats.train + stats.heldout == 400
    heldout_ids = {p.id for p in buffer.heldout()}
    train = buffer.training_prompts(10_000)
    assert len(train) == stats.train
    assert not heldout_ids & {p.id for p in train}
    buffer.mark_consumed([p.id for p in buffer.heldout()], round_id=1)  # ignored for held-out rows
    assert len(buffer.heldout()) == stats.heldout


def test_heldout_cap(tmp_path):
    db = Database(tmp_path / "c.db")
    buffer = PromptBuffer(db, heldout_fraction=0.5, heldout_max_per_task=5)
    buffer.add_many([(rec(i), None) for i in range(200)], source="t")
    assert buffer.stats().tasks["math"].heldout == 5


def test_new_since_last_round_and_round_robin_across_tasks(buffer):
    buffer.add_many([(rec(i), None) for i in range(40)], source="t")
    buffer.add_many([(rec(100 + i, f"json {i}", task="json"), None) for i in range(6)], source="t")
    stats = buffer.stats()
    batch = buffer.training_prompts(10)
    tasks = [p.record.task for p in batch]
    assert tasks.count("json") == stats.tasks["json"].train  # the small task is not crowded out
    buffer.mark_consumed([p.id for p in batch], round_id=7)
    after = buffer.stats()
    assert after.new == stats.new - 10
    assert not {p.id for p in batch} & {p.id for p in buffer.training_prompts(1000)}


def test_dead_letters_keep_payload_and_reason(buffer):
    buffer.add_rows([], source="jsonl", dead=[DeadRow("f.jsonl:3", "invalid_json", "x", b"\xff{")])
    (dead,) = buffer.dead_letters()
    assert (dead.origin, dead.reason, dead.payload) == ("f.jsonl:3", "invalid_json", b"\xff{")
    assert buffer.stats().dead_letters == 1


def test_buffer_survives_reopen(tmp_path):
    db = Database(tmp_path / "d.db")
    PromptBuffer(db, heldout_fraction=0.2, heldout_max_per_task=10).add_many([(rec(1), None)], source="t")
    db.close()
    db2 = Database(tmp_path / "d.db")
    assert PromptBuffer(db2, heldout_fraction=0.2, heldout_max_per_task=10).stats().total == 1
    assert db2.query("PRAGMA journal_mode")[0][0] == "wal"


def test_a_version_1_state_file_keeps_deduplicating_after_the_upgrade(tmp_path):
    db = Database(tmp_path / "old.db")
    PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0).add_many([(rec(1), None)], source="t")
    with db.transaction() as conn:  # what version 1 wrote: the full hash as hex text
        conn.execute("UPDATE prompts SET prompt_hash = ?", (rec(1).prompt_hash,))
        conn.execute("PRAGMA user_version=1")
    db.close()
    db = Database(tmp_path / "old.db")
    assert db.query("SELECT typeof(prompt_hash) FROM prompts")[0][0] == "blob"
    again = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0).add_many(
        [(rec(2, text="what is 1 +  1?"), None)], source="t"
    )
    assert (again.added, again.duplicates) == (0, 1)
    db.close()


def test_the_state_files_are_the_owners_alone(tmp_path):
    import stat

    db = Database(tmp_path / "state" / "taoflow.db")
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    buffer.add_many([(PromptRecord("r", "t", (Message("user", "hi?"),)), None)], source="test")
    names = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "state").iterdir()}
    db.close()
    assert names["taoflow.db"] == 0o600 and set(names.values()) == {0o600}, names

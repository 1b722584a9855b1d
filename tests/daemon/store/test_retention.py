"""Retention on a real state database: consumed prompts lose their text but not their identity, old dead
letters go, and the file gives the space back."""

import time

from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.store.buffer import DeadRow, PromptBuffer
from taoflow.daemon.store.retention import RetentionPolicy, apply_retention
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.storage import Database

DAY = 86400.0


def prompts(start, count, size=3000):
    return [
        (PromptRecord(f"r{i}", "t", (Message("user", f"q {i} " + "x" * size),)), None)
        for i in range(start, start + count)
    ]


def test_consumed_prompts_are_retired_without_their_text_and_stay_duplicates(tmp_path):
    db = Database(tmp_path / "state.db")
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    buffer.add_many(prompts(0, 3000), source="s")
    rounds = RoundStore(db, tmp_path / "rounds")
    trained = rounds.fail(rounds.start("m").id, "done with these")
    buffer.mark_consumed([p.id for p in buffer.training_prompts(2000)], trained.id)
    assert db.checkpoint()
    before = db.size()
    kept = apply_retention(db, RetentionPolicy(consumed_text_days=30), now=time.time() + 29 * DAY)
    assert kept.texts_dropped == 0  # not old enough yet
    report = apply_retention(db, RetentionPolicy(consumed_text_days=30), now=time.time() + 31 * DAY)
    assert db.checkpoint()
    assert report.texts_dropped == 2000 and report.pages_freed > 0
    assert db.size() < before * 0.5  # the file itself shrank
    lineage = db.query("SELECT count(*), min(consumed_by), max(consumed_by) FROM retired_prompts")[0]
    assert tuple(lineage) == (2000, trained.id, trained.id)
    assert buffer.stats().tasks["t"].new == 1000  # what no round used is untouched
    again = buffer.add_many(prompts(1000, 10), source="s")  # retired prompts seen again: still duplicates
    assert (again.added, again.duplicates) == (0, 10)
    db.close()


def test_dead_letters_go_by_age_and_beyond_their_cap(tmp_path):
    db = Database(tmp_path / "state.db")
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    now = time.time()
    for day, count in ((40, 5), (10, 20)):
        dead = [DeadRow(f"old-{day}-{i}", "invalid_json", "", b"{") for i in range(count)]
        buffer.add_rows([], source="kafka", dead=dead, now=now - day * DAY)
    report = apply_retention(db, RetentionPolicy(dead_letter_days=30, dead_letter_max=12), now=now)
    assert report.dead_letters_deleted == 5 + 8
    assert buffer.stats().dead_letters == 12 == len(buffer.dead_letters(limit=100))
    assert buffer.dead_letter_counts() == {"kafka": 12}
    db.close()


def test_a_state_file_of_the_previous_schema_gets_its_counts(tmp_path):
    db = Database(tmp_path / "state.db")
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    buffer.add_many(prompts(0, 7, size=10), source="s")
    buffer.add_rows([], source="s3", dead=[DeadRow("o", "r", "", b"x")])
    with db.transaction() as conn:  # what version 2 files hold: no counts
        conn.execute("DELETE FROM task_counts")
        conn.execute("DELETE FROM counters")
        conn.execute("PRAGMA user_version=2")
    db.close()
    db = Database(tmp_path / "state.db")
    stats = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0).stats()
    assert (stats.tasks["t"].new, stats.dead_letters) == (7, 1)
    db.close()

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


def prompts(task, start, count):
    return [
        (PromptRecord(f"{task}-{i}", task, (Message("user", f"{task} question {i}?"),)), None)
        for i in range(start, start + count)
    ]


def recount(db):
    """The counts the triggers keep, counted the slow way."""
    return {
        r[0]: (r[1], r[2], r[3])
        for r in db.query(
            "SELECT task, sum(split='train'), sum(split='heldout'), sum(split='train' AND consumed_by IS NULL)"
            " FROM prompts GROUP BY task"
        )
    }


def test_evict_oldest_keeps_each_tasks_newest_window_and_counts_what_went(tmp_path):
    db = Database(tmp_path / "b.db")
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0, cap=10, overflow="evict_oldest")
    result = buffer.add_many(prompts("loud", 0, 30) + prompts("quiet", 0, 3), source="t")
    assert (result.added, result.evicted) == (33, 23)
    kept = {p.record.request_id for p in buffer.training_prompts(100)}
    assert kept == {f"loud-{i}" for i in range(23, 30)} | {"quiet-0", "quiet-1", "quiet-2"}
    assert buffer.evictions() == {("loud", "evict_oldest"): 23}
    assert not buffer.full()  # an evicting buffer never makes a source wait
    buffer.add_many(prompts("loud", 30, 5), source="t")  # a steady stream: still the newest window
    assert {p.record.request_id for p in buffer.training_prompts(100) if p.record.task == "loud"} == {
        f"loud-{i}" for i in range(28, 35)
    }
    assert buffer.stats().tasks["loud"].new == 7 and buffer.evictions() == {("loud", "evict_oldest"): 28}
    db.close()


def test_reservoir_keeps_a_uniform_sample_not_the_newest(tmp_path):
    db = Database(tmp_path / "b.db")
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0, cap=100, overflow="reservoir")
    for start in range(0, 2000, 250):
        buffer.add_many(prompts("t", start, 250), source="t")
    kept = sorted(int(p.record.request_id.split("-")[1]) for p in buffer.training_prompts(1000))
    assert len(kept) == 100 and buffer.evictions() == {("t", "reservoir"): 1900}
    # Spread over the whole stream (a newest window would be 1900..1999): each quarter holds about a quarter.
    quarters = [sum(q * 500 <= i < (q + 1) * 500 for i in kept) for q in range(4)]
    assert all(10 <= n <= 40 for n in quarters), quarters
    db.close()


def test_held_out_prompts_are_never_evicted_and_counts_stay_exact(tmp_path):
    db = Database(tmp_path / "b.db")
    buffer = PromptBuffer(db, heldout_fraction=0.5, heldout_max_per_task=5, cap=4, overflow="evict_oldest")
    buffer.add_many(prompts("a", 0, 40) + prompts("b", 0, 40), source="t")
    heldout = {p.record.request_id for p in buffer.heldout()}
    assert len(heldout) == 10
    buffer.mark_consumed([p.id for p in buffer.training_prompts(3)], round_id=1)
    buffer.add_many(prompts("a", 40, 10), source="t")
    assert {p.record.request_id for p in buffer.heldout()} == heldout  # the gate's set is stable
    counts = buffer.stats()
    assert {t: (c.train, c.heldout, c.new) for t, c in counts.tasks.items()} == recount(db)
    assert counts.new == buffer.untrained() == 4
    db.close()


def test_freshness_reads_the_newest_and_oldest_untrained_prompt(tmp_path):
    db = Database(tmp_path / "b.db")
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    buffer.add_many(prompts("t", 0, 5), source="t", now=1000.0)
    buffer.add_many(prompts("t", 5, 5), source="t", now=2000.0)
    newest, median, oldest = buffer.freshness()["t"]
    assert (newest, oldest) == (2000.0, 1000.0) and median in (1000.0, 2000.0)
    db.close()


def test_unsolved_prompts_stay_for_the_next_rounds_until_their_tries_run_out(buffer):
    buffer.add_many([(rec(i), None) for i in range(40)], source="t")
    batch = buffer.training_prompts(8)
    hard = [batch[0].id, batch[3].id]
    kept = buffer.mark_consumed([p.id for p in batch], round_id=1, unsolved=hard, retries=2)
    assert sorted(kept) == sorted(hard)
    # A round resumed after this step counts nothing twice.
    assert sorted(buffer.mark_consumed([p.id for p in batch], round_id=1, unsolved=hard, retries=2)) == sorted(hard)
    left = {p.id: p.attempts for p in buffer.training_prompts(1000)}
    assert {i: left[i] for i in hard} == dict.fromkeys(hard, 1)
    assert not {p.id for p in batch[1:3] + batch[4:]} & set(left)  # solved ones are consumed
    # The next round takes them first, though newer prompts wait; a second miss counts a second try ...
    again = buffer.training_prompts(4)
    assert set(hard) <= {p.id for p in again} and sum(p.attempts for p in again) == 2
    assert sorted(buffer.mark_consumed(hard, round_id=2, unsolved=hard, retries=2)) == sorted(hard)
    # ... and the third consumes them: no prompt is tried more than 1 + retries times.
    assert buffer.mark_consumed(hard, round_id=3, unsolved=hard, retries=2) == []
    assert not set(hard) & {p.id for p in buffer.training_prompts(1000)}
    assert buffer.mark_consumed([batch[5].id], round_id=4, unsolved=[batch[5].id], retries=0) == []


def test_retried_prompts_take_at_most_half_a_round_while_new_ones_wait(buffer):
    buffer.add_many([(rec(i), None) for i in range(60)], source="t")
    first = buffer.training_prompts(20)
    buffer.mark_consumed([p.id for p in first], round_id=1, unsolved=[p.id for p in first], retries=1)
    stats = buffer.stats()
    assert stats.new == stats.tasks["math"].train  # retried prompts still count as new
    batch = buffer.training_prompts(10)
    assert sum(p.attempts > 0 for p in batch) == 5
    # With no new prompts left, retried ones fill the round.
    fresh = [p.id for p in buffer.training_prompts(1000) if not p.attempts]
    buffer.mark_consumed(fresh, round_id=2)
    assert all(p.attempts == 1 for p in buffer.training_prompts(10)) and len(buffer.training_prompts(10)) == 10


def test_a_version_4_state_file_gains_the_attempts_column(tmp_path):
    db = Database(tmp_path / "v4.db")
    PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0).add_many([(rec(1), None)], source="t")
    with db.transaction() as conn:  # what version 4 wrote: no attempts column, no retry index
        conn.execute("DROP INDEX prompts_retry")
        conn.execute("ALTER TABLE prompts DROP COLUMN tried_by")
        conn.execute("ALTER TABLE prompts DROP COLUMN attempts")
        conn.execute("PRAGMA user_version=4")
    db.close()
    db = Database(tmp_path / "v4.db")
    buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
    (prompt,) = buffer.training_prompts(10)
    assert prompt.attempts == 0
    assert buffer.mark_consumed([prompt.id], round_id=1, unsolved=[prompt.id], retries=1) == [prompt.id]
    assert db.query("SELECT name FROM sqlite_master WHERE name = 'prompts_retry'")
    db.close()

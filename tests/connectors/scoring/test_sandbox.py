"""Hostile answers against confined scorers: bounded in time and memory, no file created, no connection made."""

import subprocess
import sys
import threading
import time

import pytest

from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.scoring.sandbox import SandboxedScorer, SandboxLimits

SQL_SCHEMA = "CREATE TABLE users (id INTEGER, name TEXT); INSERT INTO users VALUES (1, 'Ann');"


def rec(text="Which users are there?"):
    return PromptRecord("r", "t", (Message("user", text),))


@pytest.fixture
def sandboxed():
    made = []

    def make(kind, params, *, seconds=2.0, memory_mb=512):
        scorer = SandboxedScorer(
            [(kind, params, 1.0)], SandboxLimits(seconds_per_candidate=seconds, memory_mb=memory_mb)
        )
        made.append(scorer)
        return scorer

    yield make
    for scorer in made:
        scorer.close()


def test_sql_answers_may_only_read_the_schema(sandboxed, tmp_path):
    scorer = sandboxed("sql", {"schema": SQL_SCHEMA})
    planted, copied = tmp_path / "rounds" / "round-00007", tmp_path / "copy.db"
    answers = [
        "SELECT name FROM users",
        f"ATTACH DATABASE '{planted}' AS x",
        f"VACUUM INTO '{copied}'",
        "SELECT randomblob(400000000), randomblob(400000000)",  # 1.55 GB and 8.6 s before; now refused at once
        "SELECT 1",  # reads no table: answers no question
        "DROP TABLE users",
    ]
    started = time.monotonic()
    assert scorer.score(rec(), answers) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert time.monotonic() - started < 5
    assert not planted.exists() and not planted.parent.exists() and not copied.exists()


def test_a_catastrophic_regex_is_cut_off_and_the_next_prompt_is_scored(sandboxed):
    scorer = sandboxed("regex", {"pattern": r"^(\w+\s?)+\.$"}, seconds=0.5)
    hostile = "a" * 40 + "!"  # ~1.7x more backtracking per character: hours, holding its process's GIL
    ticks = []
    stop = threading.Event()
    ticker = threading.Thread(target=lambda: [ticks.append(1) for _ in iter(lambda: stop.wait(0.05), True)])
    ticker.start()
    started = time.monotonic()
    assert scorer.score(rec(), [hostile, "done."]) == [None, None]  # the prompt's answers stay unscored
    elapsed = time.monotonic() - started
    stop.set()
    ticker.join()
    assert elapsed < 3 and len(ticks) >= 5  # this process kept running meanwhile (a lease renewer would)
    assert scorer.timeouts == 1 and scorer.stats.errors["timeout"] == 2
    assert scorer.score(rec(), ["fine."]) == [1.0]  # a fresh worker


def test_memory_network_and_files_are_refused(sandboxed, tmp_path):
    hoard = sandboxed("python", {"callable": "tests.connectors.scoring.broken_scorers:hoards_memory"}, memory_mb=256)
    assert hoard.score(rec(), ["x"]) == [None]
    target = tmp_path / "written.txt"
    writer = sandboxed(
        "python", {"callable": "tests.connectors.scoring.broken_scorers:writes_file", "kwargs": {"path": str(target)}}
    )
    assert writer.score(rec(), ["x"]) == [None] and not target.exists()
    caller = sandboxed("python", {"callable": "tests.connectors.scoring.broken_scorers:calls_out"})
    assert caller.score(rec(), ["x"]) == [None]
    assert caller.stats.errors["python:tests.connectors.scoring.broken_scorers:calls_out"] == 1


def test_a_bad_configuration_fails_in_the_owner_with_its_message():
    from taoflow.connectors.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="sql scorer schema does not run"):
        SandboxedScorer([("sql", {"schema": "CREATE TABLE"}, 1.0)])


HEAVY_MAIN = """
import torch, transformers, trl  # a user's script, a notebook, a bench: the worker's forkserver imports these too
from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.scoring.sandbox import SandboxedScorer, SandboxLimits

if __name__ == "__main__":
    scorer = SandboxedScorer([("arithmetic", {}, 1.0)], SandboxLimits(seconds_per_candidate=2.0))
    record = PromptRecord("r", "t", (Message("user", "What is 2 + 3?"),))
    print([scorer.score(record, ["2 + 3 = 5"]) for _ in range(3)], scorer.stats.errors.get("timeout", 0))
    scorer.close()
"""


def test_a_workers_start_is_not_charged_to_the_answers_in_a_program_that_imports_torch(tmp_path):
    """Finding: from a main module importing torch, every sandboxed score timed out (None three times at 2.0 s each),
    and a greedy evaluation counted the unscored answers as 0: the base model's 3.1 % became 0.0 %."""
    script = tmp_path / "heavy.py"
    script.write_text(HEAVY_MAIN)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "[[1.0], [1.0], [1.0]] 0"


def test_a_worker_that_never_gets_ready_is_counted_apart_and_its_answers_stay_unscored(sandboxed):
    scorer = SandboxedScorer(
        [("python", {"callable": "tests.connectors.scoring.broken_scorers:hoards_memory"}, 1.0)],
        SandboxLimits(startup_seconds=0.001),
    )
    try:
        assert scorer.score(rec(), ["x", "y"]) == [None, None]
        assert scorer.startup_failures == 1 and scorer.stats.errors == {"worker_start": 2}
    finally:
        scorer.close()

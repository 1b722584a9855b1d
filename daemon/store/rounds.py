"""Round records: which step each round has completed, so a restarted process resumes it.

A round's steps run in order; after each one the round's row records it as completed
together with that step's summary, in one transaction. The files a step leaves in
the round's work directory are written before that commit, so a recorded step's
outputs are always complete.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import RoundError
from taoflow.daemon.store.round_files import RoundFiles
from taoflow.daemon.store.storage import Database
from taoflow.daemon.store.summaries import STEPS, RoundSummary, SkipSummary, StepSummary

__all__ = ["STEPS", "RoundRecord", "RoundStore"]


@dataclass(frozen=True)
class RoundRecord:
    id: int
    model: str
    step: str  # the last completed step
    status: str  # running, done, failed, skipped
    reason: str
    work_dir: Path
    version: str | None
    started_at: float
    updated_at: float
    summary: RoundSummary

    def next_step(self) -> str:
        return STEPS[STEPS.index(self.step) + 1]

    @property
    def files(self) -> RoundFiles:
        return RoundFiles(self.work_dir)

    @property
    def started_stamp(self) -> str:
        """When the round started, as names made of it spell it (UTC, to the second)."""
        return time.strftime("%Y%m%d%H%M%S", time.gmtime(self.started_at))


class RoundStore:
    def __init__(self, db: Database, rounds_dir: Path) -> None:
        self._db = db
        self._dir = rounds_dir.absolute()  # stored absolute: a command run from elsewhere finds the same files

    def work_dir(self, stored: str) -> Path:
        """A round's directory as stored; one stored relative (before paths were stored absolute, with a relative
        state_dir) is the directory of that name under this store's rounds directory, wherever this runs."""
        path = Path(stored)
        return path if path.is_absolute() else self._dir / path.name

    def _record(self, row: Any) -> RoundRecord:
        data = dict(row)
        data["work_dir"] = self.work_dir(data["work_dir"])
        data["summary"] = RoundSummary.from_json(json.loads(data["summary"]))
        return RoundRecord(**data)

    def start(self, model: str, *, now: float | None = None) -> RoundRecord:
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO rounds (model, step, status, work_dir, started_at, updated_at)"
                " VALUES (?, 'pending', 'running', '', ?, ?)",
                (model, now, now),
            )
            round_id = int(cursor.lastrowid or 0)
            work_dir = self._dir / f"round-{round_id:05d}"
            conn.execute("UPDATE rounds SET work_dir=? WHERE id=?", (str(work_dir), round_id))
        # The round's files hold prompts and answers: this user's alone.
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        work_dir.mkdir(exist_ok=True, mode=0o700)
        return self.get(round_id)

    def get(self, round_id: int) -> RoundRecord:
        rows = self._db.query("SELECT * FROM rounds WHERE id=?", (round_id,))
        if not rows:
            raise RoundError(f"no round {round_id}")
        return self._record(rows[0])

    def latest(self, model: str) -> RoundRecord | None:
        rows = self._db.query("SELECT * FROM rounds WHERE model=? ORDER BY id DESC LIMIT 1", (model,))
        return self._record(rows[0]) if rows else None

    def unfinished(self, model: str) -> RoundRecord | None:
        rows = self._db.query(
            "SELECT * FROM rounds WHERE model=? AND status='running' ORDER BY id DESC LIMIT 1", (model,)
        )
        return self._record(rows[0]) if rows else None

    def recent(self, model: str, *, limit: int) -> list[RoundRecord]:
        """The model's last `limit` rounds, newest first."""
        rows = self._db.query("SELECT * FROM rounds WHERE model=? ORDER BY id DESC LIMIT ?", (model, limit))
        return [self._record(r) for r in rows]

    def all(self, model: str) -> list[RoundRecord]:
        """Every round of the model, newest first."""
        return [
            self._record(r) for r in self._db.query("SELECT * FROM rounds WHERE model=? ORDER BY id DESC", (model,))
        ]

    def done_since(self, model: str, since: float) -> list[RoundRecord]:
        """The model's finished rounds that started at or after `since`, newest first."""
        rows = self._db.query(
            "SELECT * FROM rounds WHERE model=? AND status='done' AND started_at>=? ORDER BY id DESC", (model, since)
        )
        return [self._record(r) for r in rows]

    def last_done_at(self, model: str) -> float | None:
        """When the model's last round that ran to its end finished."""
        rows = self._db.query("SELECT max(updated_at) FROM rounds WHERE model=? AND status='done'", (model,))
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def last_gated(self, model: str) -> RoundRecord | None:
        """The model's newest round whose gate has judged it."""
        rows = self._db.query(
            "SELECT * FROM rounds WHERE model=? AND summary LIKE '%\"gate\"%' ORDER BY id DESC LIMIT 1", (model,)
        )
        return self._record(rows[0]) if rows else None

    def ended_ids(self) -> set[int]:
        """Rounds of every model that are no longer running."""
        return {int(r[0]) for r in self._db.query("SELECT id FROM rounds WHERE status != 'running'")}

    def work_dirs(self, *, version: str | None = None) -> list[Path]:
        """Every round's work directory, or those of the rounds that made `version`."""
        if version is None:
            return [self.work_dir(r[0]) for r in self._db.query("SELECT work_dir FROM rounds")]
        return [
            self.work_dir(r[0]) for r in self._db.query("SELECT work_dir FROM rounds WHERE version = ?", (version,))
        ]

    def complete_step(
        self,
        round_id: int,
        step: str,
        summary: StepSummary,
        *,
        version: str | None = None,
        reason: str | None = None,
    ) -> RoundRecord:
        current = self.get(round_id)
        if current.next_step() != step:
            raise RoundError(f"round {round_id}: cannot complete {step!r} after {current.step!r}")
        merged = current.summary.with_step(step, summary)
        status = "done" if step == "done" else "running"
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE rounds SET step=?, status=?, summary=?, version=COALESCE(?, version),"
                " reason=COALESCE(?, reason), updated_at=? WHERE id=?",
                (step, status, json.dumps(merged.to_json()), version, reason, time.time(), round_id),
            )
        return self.get(round_id)

    def skip(self, round_id: int, step: str, summary: SkipSummary) -> RoundRecord:
        """The round ended at `step` with nothing to learn: not a failure (its summary says what it found)."""
        merged = self.get(round_id).summary.with_step(step, summary)
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE rounds SET status='skipped', reason=?, summary=?, updated_at=? WHERE id=?",
                (summary.skipped, json.dumps(merged.to_json()), time.time(), round_id),
            )
        return self.get(round_id)

    def fail(self, round_id: int, reason: str) -> RoundRecord:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE rounds SET status='failed', reason=?, updated_at=? WHERE id=?", (reason, time.time(), round_id)
            )
        return self.get(round_id)

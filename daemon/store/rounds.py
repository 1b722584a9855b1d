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
from taoflow.daemon.store.storage import Database

__all__ = ["STEPS", "RoundRecord", "RoundStore"]

STEPS: tuple[str, ...] = ("pending", "prepare", "generate", "score", "train", "register", "gate", "done")


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
    summary: dict[str, Any]

    def next_step(self) -> str:
        return STEPS[STEPS.index(self.step) + 1]


class RoundStore:
    def __init__(self, db: Database, rounds_dir: Path) -> None:
        self._db = db
        self._dir = rounds_dir

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
        work_dir.mkdir(parents=True, exist_ok=True)
        return self.get(round_id)

    def get(self, round_id: int) -> RoundRecord:
        rows = self._db.query("SELECT * FROM rounds WHERE id=?", (round_id,))
        if not rows:
            raise RoundError(f"no round {round_id}")
        return _record(rows[0])

    def latest(self, model: str) -> RoundRecord | None:
        rows = self._db.query("SELECT * FROM rounds WHERE model=? ORDER BY id DESC LIMIT 1", (model,))
        return _record(rows[0]) if rows else None

    def unfinished(self, model: str) -> RoundRecord | None:
        rows = self._db.query(
            "SELECT * FROM rounds WHERE model=? AND status='running' ORDER BY id DESC LIMIT 1", (model,)
        )
        return _record(rows[0]) if rows else None

    def complete_step(
        self,
        round_id: int,
        step: str,
        summary: dict[str, Any],
        *,
        version: str | None = None,
        reason: str | None = None,
    ) -> RoundRecord:
        current = self.get(round_id)
        if current.next_step() != step:
            raise RoundError(f"round {round_id}: cannot complete {step!r} after {current.step!r}")
        merged = {**current.summary, step: summary}
        status = "done" if step == "done" else "running"
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE rounds SET step=?, status=?, summary=?, version=COALESCE(?, version),"
                " reason=COALESCE(?, reason), updated_at=? WHERE id=?",
                (step, status, json.dumps(merged), version, reason, time.time(), round_id),
            )
        return self.get(round_id)

    def skip(self, round_id: int, step: str, reason: str, summary: dict[str, Any]) -> RoundRecord:
        """The round ended at `step` with nothing to learn: not a failure (its summary says what it found)."""
        merged = {**self.get(round_id).summary, step: summary}
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE rounds SET status='skipped', reason=?, summary=?, updated_at=? WHERE id=?",
                (reason, json.dumps(merged), time.time(), round_id),
            )
        return self.get(round_id)

    def fail(self, round_id: int, reason: str) -> RoundRecord:
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE rounds SET status='failed', reason=?, updated_at=? WHERE id=?", (reason, time.time(), round_id)
            )
        return self.get(round_id)


def _record(row: Any) -> RoundRecord:
    data = dict(row)
    data["work_dir"] = Path(data["work_dir"])
    data["summary"] = json.loads(data["summary"])
    return RoundRecord(**data)

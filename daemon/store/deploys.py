"""Deploy records: every rollout to the fleet, one row each, updated step by step.

    running ──(all waves switched, registry moved)──▶ watching ──window passes──▶ done
       │                                                 └──thresholds crossed──▶ done (+ a rollback deploy)
       └──failure──▶ reverting ──(switched replicas restored)──▶ reverted
    (a rollback deploy ends in done, or failed when even the revert could not finish)

A restarted daemon finds `running` and `reverting` rows and carries them on; each step
is idempotent (it looks at what the replicas serve before it changes anything).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from taoflow.daemon.store.storage import Database

__all__ = ["DeployRecord", "DeployStore"]

OPEN = ("running", "reverting")


@dataclass(frozen=True)
class DeployRecord:
    id: int
    model: str
    kind: str  # promote | rollback
    trigger: str  # gate | manual | api | watch
    version: str
    from_version: str | None
    status: str
    step: str
    waves: list[list[str]]
    switched: list[str]
    skipped: list[str]
    reason: str
    detail: dict[str, Any]
    started_at: float
    updated_at: float
    finished_at: float | None


class DeployStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def start(
        self,
        *,
        model: str,
        kind: str,
        trigger: str,
        version: str,
        from_version: str | None,
        waves: list[list[str]],
        reason: str,
    ) -> DeployRecord:
        now = time.time()
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO deploys (model, kind, trigger, version, from_version, status, step, plan, reason,"
                " started_at, updated_at) VALUES (?, ?, ?, ?, ?, 'running', 'preflight', ?, ?, ?, ?)",
                (model, kind, trigger, version, from_version, json.dumps(waves), reason, now, now),
            )
            deploy_id = int(cursor.lastrowid or 0)
        return self.get(deploy_id)

    def get(self, deploy_id: int) -> DeployRecord:
        return _record(self._db.query("SELECT * FROM deploys WHERE id=?", (deploy_id,))[0])

    def open(self, model: str) -> DeployRecord | None:
        """The deploy a restarted daemon must finish or revert (at most one per model)."""
        rows = self._db.query(
            "SELECT * FROM deploys WHERE model=? AND status IN (?, ?) ORDER BY id LIMIT 1", (model, *OPEN)
        )
        return _record(rows[0]) if rows else None

    def watching(self, model: str) -> DeployRecord | None:
        rows = self._db.query("SELECT * FROM deploys WHERE model=? AND status='watching' ORDER BY id DESC", (model,))
        return _record(rows[0]) if rows else None

    def latest(self, model: str, *, limit: int = 10) -> list[DeployRecord]:
        rows = self._db.query("SELECT * FROM deploys WHERE model=? ORDER BY id DESC LIMIT ?", (model, limit))
        return [_record(r) for r in rows]

    def counts(self, model: str) -> dict[tuple[str, str, str], int]:
        """The model's deploys by (kind, trigger, status)."""
        rows = self._db.query(
            "SELECT kind, trigger, status, count(*) FROM deploys WHERE model=? GROUP BY kind, trigger, status", (model,)
        )
        return {(str(r[0]), str(r[1]), str(r[2])): int(r[3]) for r in rows}

    def running_count(self, model: str) -> int:
        """The model's deploys rolling out or reverting now."""
        return int(
            self._db.query("SELECT count(*) FROM deploys WHERE model=? AND status IN (?, ?)", (model, *OPEN))[0][0]
        )

    def watch_rollbacks(self, model: str) -> list[DeployRecord]:
        """The model's deploys the post-deploy watch rolled back."""
        rows = self._db.query(
            "SELECT * FROM deploys WHERE model=? AND reason LIKE 'rolled back by the watch%' ORDER BY id", (model,)
        )
        return [_record(r) for r in rows]

    def promotes(self, version: str) -> list[DeployRecord]:
        """Every promote deploy of `version`, oldest first."""
        rows = self._db.query("SELECT * FROM deploys WHERE version=? AND kind='promote' ORDER BY id", (version,))
        return [_record(r) for r in rows]

    def supersede(self, model: str, *, by: int) -> None:
        """A newer deploy ends the watch of older ones: their adapter no longer serves."""
        now = time.time()
        with self._db.transaction() as conn:
            conn.execute(
                "UPDATE deploys SET status='done', step='done', finished_at=?, updated_at=?"
                " WHERE model=? AND status='watching' AND id<>?",
                (now, now, model, by),
            )

    def update(self, deploy_id: int, **changes: Any) -> DeployRecord:
        """Write the given columns (lists and dicts as JSON) in one transaction."""
        now = time.time()
        columns = {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in changes.items()}
        if columns.get("status") in ("done", "reverted", "failed"):
            columns["finished_at"] = now
        columns["updated_at"] = now
        assignments = ", ".join(f"{name}=?" for name in columns)  # names come from this module's callers only
        with self._db.transaction() as conn:
            conn.execute(f"UPDATE deploys SET {assignments} WHERE id=?", (*columns.values(), deploy_id))
        return self.get(deploy_id)


def _record(row: Any) -> DeployRecord:
    data = dict(row)
    data["waves"] = json.loads(data.pop("plan"))
    for key in ("switched", "skipped", "detail"):
        data[key] = json.loads(data[key])
    return DeployRecord(**data)

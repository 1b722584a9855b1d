"""Operator controls that survive restarts: the pause flag and the gate-rejection back-off reset."""

from __future__ import annotations

import json
import time
from typing import Any

from taoflow.daemon.store.storage import Database

__all__ = ["Controls"]


class Controls:
    def __init__(self, db: Database) -> None:
        self._db = db

    def paused(self, *, default: bool) -> bool:
        """The operator's last word, or `default` if there was none."""
        value = self._get("paused")
        return default if value is None else bool(value["paused"])

    def pause_reason(self) -> str | None:
        value = self._get("paused")
        return str(value.get("reason", "")) if value and value["paused"] else None

    def set_paused(self, paused: bool, *, reason: str) -> None:
        self._set("paused", {"paused": paused, "reason": reason})

    def rejections_reset_at(self) -> float:
        value = self._get("rejections_reset")
        return float(value["at"]) if value else 0.0

    def reset_rejections(self, *, now: float | None = None) -> None:
        self._set("rejections_reset", {"at": time.time() if now is None else now})

    def count_resume(self, round_id: int) -> int:
        """Count one more attempt to resume a round; return how many there have been."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT value FROM daemon_state WHERE key=?", (f"round-resumes-{round_id}",)).fetchone()
            starts = (json.loads(row[0]) if row else 0) + 1
            conn.execute(
                "INSERT OR REPLACE INTO daemon_state (key, value, updated_at) VALUES (?, ?, ?)",
                (f"round-resumes-{round_id}", json.dumps(starts), time.time()),
            )
        return int(starts)

    def _get(self, key: str) -> Any:
        rows = self._db.query("SELECT value FROM daemon_state WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def _set(self, key: str, value: Any) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO daemon_state (key, value, updated_at) VALUES (?, ?, ?)",
                (key, json.dumps(value), time.time()),
            )

"""Where each source has got to: the objects an object source has ingested (by key and etag) and the version of a
Delta table read so far. Written in the transaction that stores what was read, so a crash redoes nothing twice."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taoflow.daemon.store.storage import Database

__all__ = ["TableCheckpoint", "ingested_objects", "objects_ingested", "set_table_checkpoint", "table_checkpoint"]


def ingested_objects(db: Database, source: str) -> set[tuple[str, str]]:
    """The (key, etag) of every object the source has ingested."""
    return {(r[0], r[1]) for r in db.query("SELECT key, etag FROM ingested_objects WHERE source=?", (source,))}


def objects_ingested(source: str, objects: Sequence[tuple[str, str]]) -> Callable[[sqlite3.Connection], object]:
    """What records these (key, etag) as ingested, to run inside the transaction that stores their prompts."""

    def record(conn: sqlite3.Connection) -> object:
        now = time.time()
        return conn.executemany(
            "INSERT OR IGNORE INTO ingested_objects (source, key, etag, completed_at) VALUES (?, ?, ?, ?)",
            [(source, key, etag, now) for key, etag in objects],
        )

    return record


@dataclass(frozen=True)
class TableCheckpoint:
    version: int
    snapshot: bool  # the snapshot of `version` is still being read


def table_checkpoint(db: Database, source: str, table_uri: str) -> TableCheckpoint | None:
    rows = db.query(
        "SELECT version, snapshot FROM table_versions WHERE source = ? AND table_uri = ?", (source, table_uri)
    )
    return TableCheckpoint(int(rows[0][0]), bool(rows[0][1])) if rows else None


def set_table_checkpoint(db: Database, source: str, table_uri: str, version: int, *, snapshot: bool = False) -> None:
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO table_versions (source, table_uri, version, snapshot, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (source, table_uri) DO UPDATE SET version = excluded.version,"
            " snapshot = excluded.snapshot, updated_at = excluded.updated_at",
            (source, table_uri, version, int(snapshot), time.time()),
        )

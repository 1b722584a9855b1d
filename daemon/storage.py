"""The one durable place: a single SQLite file in WAL mode, and its schema.

The prompt buffer, the dead letter, the adapter registry and the round records all
live here, so one transaction can move a prompt and a round forward together and a
crash leaves either the old state or the new one, never half of each.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "Database"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    prompt_hash TEXT NOT NULL UNIQUE,
    origin TEXT,
    task TEXT NOT NULL,
    split TEXT NOT NULL CHECK (split IN ('train', 'heldout')),
    record TEXT NOT NULL,
    source TEXT NOT NULL,
    ingested_at REAL NOT NULL,
    consumed_by INTEGER
);
-- Small and cheap: what the buffer cap counts, read before every poll.
CREATE INDEX IF NOT EXISTS prompts_pending ON prompts (task) WHERE consumed_by IS NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    origin TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_origin ON dead_letters (source, origin);
CREATE TABLE IF NOT EXISTS ingested_objects (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    completed_at REAL NOT NULL,
    PRIMARY KEY (source, key, etag)
);
CREATE TABLE IF NOT EXISTS adapters (
    version TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    state TEXT NOT NULL,
    parent TEXT,
    base_model TEXT NOT NULL,
    base_digest TEXT NOT NULL,
    uri TEXT NOT NULL,
    manifest TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS adapter_events (
    id INTEGER PRIMARY KEY,
    version TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (model, alias)
);
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY,
    model TEXT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    work_dir TEXT NOT NULL,
    version TEXT,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}'
);
"""


class Database:
    """A thread-safe handle on the state file; `transaction()` is the only way to write."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a transaction acknowledged to a source (and so to Kafka) survives power loss.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        # executescript commits on its own; every statement is idempotent (IF NOT EXISTS).
        self._conn.executescript(_SCHEMA)
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any exception."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

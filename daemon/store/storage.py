"""The one durable place: a single SQLite file in WAL mode, and its schema.

The prompt buffer, the dead letter, the adapter registry and the round records all
live here, so one transaction can move a prompt and a round forward together and a
crash leaves either the old state or the new one, never half of each.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "Database", "prompt_hash_key"]

SCHEMA_VERSION = 2
_PAGE_SIZE = 16384
# About 64 MiB of WAL: reached only if the background checkpointer falls far behind.
_WRITER_CHECKPOINT_PAGES = 4096

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    -- First 16 bytes of the normalised prompt hash: a short random key keeps its index small.
    prompt_hash BLOB NOT NULL UNIQUE,
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
-- The held-out counts read on every buffered batch: a scan of held-out rows only.
CREATE INDEX IF NOT EXISTS prompts_heldout ON prompts (task) WHERE split = 'heldout';
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
-- Single-flight locks that outlive their holder's process: taken over once stale.
-- Every rollout of an adapter to the serving fleet, as a resumable state machine (daemon/fleet/deploy.py).
CREATE TABLE IF NOT EXISTS deploys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('promote', 'rollback')),
    trigger TEXT NOT NULL,
    version TEXT NOT NULL,
    from_version TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'reverting', 'watching', 'done', 'reverted', 'failed')),
    step TEXT NOT NULL,
    plan TEXT NOT NULL,
    switched TEXT NOT NULL DEFAULT '[]',
    skipped TEXT NOT NULL DEFAULT '[]',
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS deploys_open ON deploys (model, status);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    acquired_at REAL NOT NULL,
    renewed_at REAL NOT NULL
);
-- Operator state that survives restarts (pause flag, back-off reset).
CREATE TABLE IF NOT EXISTS daemon_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""


def prompt_hash_key(prompt_hash: str) -> bytes:
    """The stored form of a prompt hash (hex): its first 16 bytes."""
    return bytes.fromhex(prompt_hash[:32])


class Database:
    """A thread-safe handle on the state file; `transaction()` is the only way to write.

    The WAL is copied back into the database file by a background thread every
    `checkpoint_interval_s`, not by the committing writer: an ingest commit then only
    appends to the WAL (about half the time of a commit that also checkpoints). The
    writer still checkpoints by itself if the WAL reaches `_WRITER_CHECKPOINT_PAGES`.
    """

    def __init__(self, path: Path, *, checkpoint_interval_s: float = 0.5) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            # Prompts, dead letters and the registry are this installation's alone: owner-only (0600);
            # SQLite gives its -wal and -shm files the database file's permissions.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        self.path = path
        self._lock = threading.RLock()
        self._conn = self._connect()
        # executescript commits on its own; every statement is idempotent (IF NOT EXISTS).
        self._conn.executescript(_SCHEMA)
        self._migrate()
        self._conn.execute(f"PRAGMA wal_autocheckpoint={_WRITER_CHECKPOINT_PAGES}")
        self._closed = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_loop, args=(checkpoint_interval_s,), name="db-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _migrate(self) -> None:
        with self.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < 2:  # 1 stored prompt hashes as hex text
                conn.create_function("hash_key", 1, prompt_hash_key, deterministic=True)
                conn.execute(
                    "UPDATE prompts SET prompt_hash = hash_key(prompt_hash) WHERE typeof(prompt_hash) = 'text'"
                )
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.row_factory = sqlite3.Row
        # Takes effect only when the file is created (before WAL): a stored record is about 1-4 KB, and
        # 4 KiB pages held one each (bench/buffer.py compares the two).
        conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a transaction acknowledged to a source (and so to Kafka) survives power loss.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _checkpoint_loop(self, interval_s: float) -> None:
        conn = self._connect()
        try:
            while not self._closed.wait(interval_s):
                try:
                    # PASSIVE: copies what no reader still needs, never waits for or blocks the writer.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("background WAL checkpoint failed (the writer checkpoints instead): %s", exc)
        finally:
            conn.close()

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
        self._closed.set()
        self._checkpointer.join()
        with self._lock:
            self._conn.close()

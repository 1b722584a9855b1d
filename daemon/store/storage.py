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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["SCHEMA_VERSION", "Database", "prompt_hash_key"]

SCHEMA_VERSION = 5
_PAGE_SIZE = 16384
# About 64 MiB of WAL: reached only if the background checkpointer falls far behind.
_WRITER_CHECKPOINT_PAGES = 4096

log = logging.getLogger(__name__)

_NOT_AGAIN = """
CREATE TRIGGER IF NOT EXISTS prompts_not_again BEFORE INSERT ON prompts
WHEN EXISTS (SELECT 1 FROM retired_prompts WHERE prompt_hash = NEW.prompt_hash OR request_id = NEW.request_id)
    OR EXISTS (SELECT 1 FROM erasures WHERE request_id = NEW.request_id)
    OR EXISTS (SELECT 1 FROM erasures WHERE prompt_hash = NEW.prompt_hash)
BEGIN
    SELECT RAISE(IGNORE);
END;
"""

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
    consumed_by INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    tried_by INTEGER
);
-- attempts: the rounds that tried a prompt and found nothing to learn in it (generate.retry_unsolved); tried_by:
-- the last of them.
-- The untrained prompts of a task, newest or oldest first: a round's selection and eviction read only the rows
-- they take.
CREATE INDEX IF NOT EXISTS prompts_new ON prompts (task, id) WHERE split = 'train' AND consumed_by IS NULL;
-- prompts_retry, on the column `attempts` a version-4 table lacks, is made by the migration to version 5.
-- The gate's held-out set, in order.
CREATE INDEX IF NOT EXISTS prompts_heldout ON prompts (task) WHERE split = 'heldout';
-- Consumed prompts: what retention looks at (new prompts are not in it).
CREATE INDEX IF NOT EXISTS prompts_consumed ON prompts (consumed_by) WHERE consumed_by IS NOT NULL;
-- Prompts trained on long ago, without their text: enough for dedup, erasure and lineage (store/retention.py).
CREATE TABLE IF NOT EXISTS retired_prompts (
    request_id TEXT NOT NULL UNIQUE,
    prompt_hash BLOB NOT NULL UNIQUE,
    task TEXT NOT NULL,
    consumed_by INTEGER,
    ingested_at REAL NOT NULL,
    retired_at REAL NOT NULL
);
-- Prompts erased at their source's request (a Delta DELETE, `taoflow forget`): the row is gone; what stays is
-- enough to keep it out for good and, where a round had trained on it, which round (and so which adapter).
CREATE TABLE IF NOT EXISTS erasures (
    id INTEGER PRIMARY KEY,
    request_id TEXT,
    prompt_hash BLOB,
    task TEXT,
    prompt_id INTEGER,
    consumed_by INTEGER,
    reason TEXT NOT NULL,
    erased_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS erasures_request ON erasures (request_id);
CREATE INDEX IF NOT EXISTS erasures_hash ON erasures (prompt_hash);
CREATE INDEX IF NOT EXISTS erasures_prompt ON erasures (prompt_id);
CREATE INDEX IF NOT EXISTS erasures_trained ON erasures (consumed_by) WHERE consumed_by IS NOT NULL;
-- A retired prompt seen again is a duplicate, as it was while it was held; an erased one never comes back.
{not_again}-- Counts per task kept in the same transactions as the rows (inserts are counted per batch by the buffer; a
-- trigger per inserted row would cost more than the insert; deletes and updates by triggers): what policies,
-- the cap and /metrics read costs the same at ten thousand prompts and at ten million.
CREATE TABLE IF NOT EXISTS task_counts (
    task TEXT PRIMARY KEY,
    train INTEGER NOT NULL DEFAULT 0,
    heldout INTEGER NOT NULL DEFAULT 0,
    new INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER IF NOT EXISTS prompts_uncounted AFTER DELETE ON prompts BEGIN
    UPDATE task_counts SET train = train - (OLD.split = 'train'), heldout = heldout - (OLD.split = 'heldout'),
        new = new - (OLD.split = 'train' AND OLD.consumed_by IS NULL)
    WHERE task = OLD.task;
END;
CREATE TRIGGER IF NOT EXISTS prompts_recounted AFTER UPDATE OF task, split, consumed_by ON prompts BEGIN
    UPDATE task_counts SET train = train - (OLD.split = 'train'), heldout = heldout - (OLD.split = 'heldout'),
        new = new - (OLD.split = 'train' AND OLD.consumed_by IS NULL)
    WHERE task = OLD.task;
    INSERT INTO task_counts (task, train, heldout, new)
    VALUES (NEW.task, NEW.split = 'train', NEW.split = 'heldout', NEW.split = 'train' AND NEW.consumed_by IS NULL)
    ON CONFLICT (task) DO UPDATE SET
        train = train + excluded.train, heldout = heldout + excluded.heldout, new = new + excluded.new;
END;
-- Prompts the buffer let go to keep room for fresher ones, by task and policy (never silent).
CREATE TABLE IF NOT EXISTS evictions (
    task TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (task, reason)
);
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
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS dead_letters_counted AFTER INSERT ON dead_letters BEGIN
    INSERT INTO counters (name, value) VALUES ('dead_letters:' || NEW.source, 1)
    ON CONFLICT (name) DO UPDATE SET value = value + 1;
END;
CREATE TRIGGER IF NOT EXISTS dead_letters_uncounted AFTER DELETE ON dead_letters BEGIN
    UPDATE counters SET value = value - 1 WHERE name = 'dead_letters:' || OLD.source;
END;
CREATE TABLE IF NOT EXISTS ingested_objects (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    completed_at REAL NOT NULL,
    PRIMARY KEY (source, key, etag)
);
-- A table source's checkpoint (Delta): every version up to `version` is ingested and its deletes erased;
-- `snapshot` is 1 while the first start's snapshot of `version` is still being read.
CREATE TABLE IF NOT EXISTS table_versions (
    source TEXT NOT NULL,
    table_uri TEXT NOT NULL,
    version INTEGER NOT NULL,
    snapshot INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    PRIMARY KEY (source, table_uri)
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
-- What the stable name means at the gateways: its versions and their shares of traffic (daemon/store/routes.py).
CREATE TABLE IF NOT EXISTS routes (
    model TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    targets TEXT NOT NULL,
    updated_at REAL NOT NULL
);
-- A version the stable name's requests are mirrored to before it serves anyone (daemon/store/shadows.py).
CREATE TABLE IF NOT EXISTS shadows (
    model TEXT PRIMARY KEY,
    deploy_id INTEGER NOT NULL,
    version TEXT NOT NULL,
    mirror TEXT NOT NULL,
    started_at REAL NOT NULL
);
-- A mirrored request's two answers, as the gateway captured them: the champion's exchange and the candidate's.
CREATE TABLE IF NOT EXISTS shadow_pairs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    deploy_id INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    gateway TEXT NOT NULL,
    champion TEXT NOT NULL,
    candidate TEXT NOT NULL,
    received_at REAL NOT NULL,
    UNIQUE (deploy_id, request_id)
);
-- The last report of each gateway: the route generation it applies and its requests in flight per served name.
CREATE TABLE IF NOT EXISTS gateway_reports (
    gateway TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    inflight TEXT NOT NULL,
    seen_at REAL NOT NULL
);
-- Operator state that survives restarts (pause flag, back-off reset).
CREATE TABLE IF NOT EXISTS daemon_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
""".replace("{not_again}", _NOT_AGAIN)


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
            if version < 3:  # 2 counted prompts with a scan on every read: count them once, then keep counting
                conn.execute("DROP INDEX IF EXISTS prompts_pending")
                conn.execute("DELETE FROM task_counts")
                conn.execute(
                    "INSERT INTO task_counts (task, train, heldout, new) SELECT task, sum(split = 'train'),"
                    " sum(split = 'heldout'), sum(split = 'train' AND consumed_by IS NULL) FROM prompts GROUP BY task"
                )
                conn.execute(
                    "INSERT OR REPLACE INTO counters (name, value)"
                    " SELECT 'dead_letters:' || source, count(*) FROM dead_letters GROUP BY source"
                )
            if version < 4:  # 3 had no erasures: its trigger let an erased prompt back in
                conn.execute("DROP TRIGGER IF EXISTS prompts_not_again")
                conn.execute(_NOT_AGAIN)
            if version < 5:  # 4 consumed every prompt a round tried; 5 counts the tries that found nothing to learn
                columns = {row[1] for row in conn.execute("PRAGMA table_info(prompts)")}
                if "attempts" not in columns:
                    conn.execute("ALTER TABLE prompts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0")
                if "tried_by" not in columns:
                    conn.execute("ALTER TABLE prompts ADD COLUMN tried_by INTEGER")
                # The untrained prompts a round tried without finding anything to learn: the next rounds take
                # them first.
                conn.execute(
                    "CREATE INDEX IF NOT EXISTS prompts_retry ON prompts (task, id)"
                    " WHERE split = 'train' AND consumed_by IS NULL AND attempts > 0"
                )
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.row_factory = sqlite3.Row
        # Takes effect only when the file is created (before WAL): a stored record is about 1-4 KB, and
        # 4 KiB pages held one each (bench/buffer.py compares the two).
        conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        # Also only for a new file: retention's deletes can then give pages back to the file system.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a transaction acknowledged to a source (and so to Kafka) survives power loss.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # A deleted row's bytes are overwritten, not left in a free page: an erased prompt is gone from the file.
        conn.execute("PRAGMA secure_delete=ON")
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

    def size(self) -> int:
        """Bytes of the database file (its WAL aside)."""
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def checkpoint(self, *, timeout_s: float = 10.0) -> bool:
        """Copy the whole WAL into the database file and truncate the WAL; True once done, False if readers or the
        background checkpointer kept it from finishing for `timeout_s`. A file that an incremental vacuum shrank
        gets shorter only here: until a checkpoint completes, its last pages still live in the WAL.

        SQLite answers busy (without waiting) while another connection checkpoints, so this retries."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if not busy:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def vacuum_step(self, pages: int) -> None:
        """Give up to `pages` free pages back to the file system (a file with incremental auto-vacuum). The
        pragma frees one page per step of its statement: executescript steps it to the end, in its own
        transaction."""
        with self._lock:
            self._conn.executescript(f"PRAGMA incremental_vacuum({int(pages)});")

    def ping(self) -> None:
        """Raises if the database cannot be read (what readiness asks)."""
        self.query("SELECT 1")

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, params))

    def close(self) -> None:
        self._closed.set()
        self._checkpointer.join()
        with self._lock:
            self._conn.close()

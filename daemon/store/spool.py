"""The capture spool: captured exchanges on local disk until the sink has them.

One SQLite file (WAL). Records are appended by one writer thread that commits whatever has queued up
in one transaction (group commit: one fsync for many requests), and removed only after the sink
accepted them, so a crash of the gateway, or of the sink, loses nothing that was spooled. Past
`max_bytes` new records are refused (the caller counts them as dropped): a dead sink costs disk up to a
bound, never memory or a client's request.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from taoflow.connectors.sinks.base import Captured

__all__ = ["Spool", "SpoolDepth"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_key ON spool (key);
"""


@dataclass(frozen=True)
class SpoolDepth:
    records: int
    bytes: int
    oldest_at: float | None


_STOP = object()
_Item = tuple[str, bytes, float, "Future[bool]"]


class Spool:
    def __init__(self, path: Path, *, max_bytes: int, durable: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():  # captured exchanges are prompts and answers: owner-only, like the state database
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        self.path = path
        self.max_bytes = max_bytes
        self._sync = "FULL" if durable else "NORMAL"
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        self._reader = self._connect()  # the drainer's and the metrics' (under _read_lock)
        self._read_lock = threading.Lock()
        records, size = self._writer.execute("SELECT count(*), COALESCE(SUM(length(value)), 0) FROM spool").fetchone()
        self._records, self._bytes = int(records), int(size)
        self._lock = threading.Lock()  # the counters
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._sync}")
        conn.execute("PRAGMA secure_delete=ON")  # an erased request's bytes are overwritten, not left free
        return conn

    # ------------------------------------------------------------------ writing
    def put(self, key: str, value: bytes, at: float) -> Future[bool]:
        """Spool one record; the future is True once it is on disk, False when the spool was full."""
        done: Future[bool] = Future()
        self._queue.put((key, value, at, done))
        return done

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            while len(batch) < 1000:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(more)
            self._write(batch)

    def _write(self, batch: list[object]) -> None:
        accepted: list[_Item] = []
        refused: list[Future[bool]] = []
        with self._lock:
            room = self.max_bytes - self._bytes
        for item in batch:
            key, value, at, done = cast(_Item, item)
            if len(value) <= room:
                room -= len(value)
                accepted.append((key, value, at, done))
            else:
                refused.append(done)
        try:
            if accepted:
                self._writer.execute("BEGIN IMMEDIATE")
                self._writer.executemany(
                    "INSERT INTO spool (key, value, at) VALUES (?, ?, ?)", [(k, v, a) for k, v, a, _ in accepted]
                )
                self._writer.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("capture spool %s: cannot write %d record(s): %s", self.path, len(accepted), exc)
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
            refused.extend(done for *_, done in accepted)
            accepted = []
        with self._lock:
            self._records += len(accepted)
            self._bytes += sum(len(v) for _, v, _, _ in accepted)
        for *_, done in accepted:
            done.set_result(True)
        for done in refused:
            done.set_result(False)

    # ------------------------------------------------------------------ reading
    def batch(self, limit: int) -> list[Captured]:
        with self._read_lock:
            rows = self._reader.execute(
                "SELECT seq, key, value, at FROM spool ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [Captured(int(seq), key, bytes(value), float(at)) for seq, key, value, at in rows]

    def remove(self, records: list[Captured]) -> None:
        """Forget records the sink has (by sequence number: only these, even if more came in since)."""
        if not records:
            return
        with self._read_lock:
            self._reader.execute("BEGIN IMMEDIATE")
            try:
                self._reader.executemany("DELETE FROM spool WHERE seq=?", [(r.seq,) for r in records])
            except BaseException:
                self._reader.execute("ROLLBACK")
                raise
            self._reader.execute("COMMIT")
        with self._lock:
            self._records -= len(records)
            self._bytes -= sum(len(r.value) for r in records)

    def forget(self, keys: Sequence[str]) -> int:
        """Erased requests' records, gone from the spool and from its file (deleted securely, the WAL truncated);
        returns how many there were."""
        if not keys:
            return 0
        with self._read_lock:
            self._reader.execute("BEGIN IMMEDIATE")
            try:
                gone = 0
                size = 0
                for key in keys:
                    row = self._reader.execute(
                        "SELECT count(*), COALESCE(SUM(length(value)), 0) FROM spool WHERE key=?", (key,)
                    ).fetchone()
                    gone, size = gone + int(row[0]), size + int(row[1])
                    self._reader.execute("DELETE FROM spool WHERE key=?", (key,))
            except BaseException:
                self._reader.execute("ROLLBACK")
                raise
            self._reader.execute("COMMIT")
            if gone:
                self._reader.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with self._lock:
            self._records -= gone
            self._bytes -= size
        return gone

    def depth(self) -> SpoolDepth:
        with self._read_lock:
            row = self._reader.execute("SELECT at FROM spool ORDER BY seq LIMIT 1").fetchone()
        with self._lock:
            return SpoolDepth(self._records, self._bytes, float(row[0]) if row else None)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        self._writer.close()
        self._reader.close()


def age(depth: SpoolDepth) -> float:
    """Seconds the oldest spooled record has waited (0 for an empty spool)."""
    return 0.0 if depth.oldest_at is None else max(0.0, time.time() - depth.oldest_at)

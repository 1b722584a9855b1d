"""The durable prompt buffer: dedup, held-out split, dead letter, per-task counts.

A record is acknowledged to its source only after `add_many` returns, i.e. after the
transaction that holds it has committed. Dedup is by request id (explicit, or derived
from the record's bytes) and by normalised prompt hash, so a replay after a crash
counts nothing twice; each prompt keeps its origin (file:line, topic/partition/offset,
object#etag:row) for provenance.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from taoflow.connectors.records import PromptRecord
from taoflow.daemon.store.storage import Database, prompt_hash_key
from taoflow.policies.split import assign_split

__all__ = [
    "BufferRow",
    "BufferStats",
    "DeadLetter",
    "DeadRow",
    "IngestResult",
    "PromptBuffer",
    "StoredPrompt",
    "TaskCounts",
    "buffer_row",
]


@dataclass(frozen=True)
class StoredPrompt:
    id: int
    record: PromptRecord
    split: str


@dataclass(frozen=True)
class TaskCounts:
    train: int = 0
    heldout: int = 0
    new: int = 0  # train prompts no round has consumed yet


@dataclass(frozen=True)
class BufferStats:
    tasks: dict[str, TaskCounts]
    dead_letters: int

    @property
    def total(self) -> int:
        return sum(c.train + c.heldout for c in self.tasks.values())

    @property
    def new(self) -> int:
        return sum(c.new for c in self.tasks.values())


@dataclass(frozen=True)
class DeadLetter:
    id: int
    source: str
    origin: str
    reason: str
    detail: str
    payload: bytes
    created_at: float


#: A record ready for the prompts table: (request id, prompt hash, origin, task, record JSON). Built
#: where parsing happens, often a worker process: a plain tuple pickles far cheaper than a NamedTuple.
BufferRow = tuple[str, str, str | None, str, str]


def buffer_row(record: PromptRecord, origin: str | None) -> BufferRow:
    return record.request_id, record.prompt_hash, origin, record.task, record.to_json()


class DeadRow(NamedTuple):
    """A record that could not be buffered: where it came from, why, and its bytes."""

    origin: str
    reason: str
    detail: str
    payload: bytes


# A replayed stream re-reads the same bad record: one dead letter per origin.
_DEAD_LETTER_SQL = (
    "INSERT OR IGNORE INTO dead_letters (source, origin, reason, detail, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class IngestResult:
    added: int = 0
    duplicates: int = 0


class PromptBuffer:
    """Prompts waiting for (or held out from) training rounds."""

    def __init__(self, db: Database, *, heldout_fraction: float, heldout_max_per_task: int) -> None:
        self._db = db
        self._heldout_fraction = heldout_fraction
        self._heldout_max = heldout_max_per_task

    def add_many(
        self,
        items: Iterable[tuple[PromptRecord, str | None]],
        *,
        source: str,
        now: float | None = None,
        also: Callable[[sqlite3.Connection], object] | None = None,
    ) -> IngestResult:
        """Store (record, origin) pairs in one transaction; duplicates are counted, not stored."""
        return self.add_rows(
            [buffer_row(record, origin) for record, origin in items], source=source, now=now, also=also
        )

    def add_rows(
        self,
        rows: Sequence[BufferRow],
        *,
        source: str,
        dead: Sequence[DeadRow] = (),
        now: float | None = None,
        also: Callable[[sqlite3.Connection], object] | None = None,
    ) -> IngestResult:
        """Store prepared rows and dead letters in one transaction; duplicates are counted, not stored.

        Splits are decided before the insert, counting every row of the batch as new: a
        duplicate in the batch can only make the held-out cap fill a few rows later. `also`
        runs in the same transaction (a source's checkpoint: one commit, one fsync).
        """
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            heldout = Counter(
                {
                    row[0]: row[1]
                    for row in conn.execute("SELECT task, count(*) FROM prompts WHERE split='heldout' GROUP BY task")
                }
            )
            values = []
            for request_id, prompt_hash, origin, task, record in rows:
                split = assign_split(
                    prompt_hash,
                    heldout_fraction=self._heldout_fraction,
                    heldout_count=heldout[task],
                    heldout_max=self._heldout_max,
                )
                heldout[task] += split == "heldout"
                values.append((request_id, prompt_hash_key(prompt_hash), origin, task, split, record, source, now))
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO prompts (request_id, prompt_hash, origin, task, split, record, source,"
                " ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            added = conn.total_changes - before
            conn.executemany(_DEAD_LETTER_SQL, [(source, *d, now) for d in dead])
            if also is not None:
                also(conn)
        return IngestResult(added=added, duplicates=len(values) - added)

    def stats(self) -> BufferStats:
        tasks: dict[str, TaskCounts] = {}
        for row in self._db.query(
            "SELECT task, sum(split='train'), sum(split='heldout'),"
            " sum(split='train' AND consumed_by IS NULL) FROM prompts GROUP BY task ORDER BY task"
        ):
            tasks[row[0]] = TaskCounts(train=row[1], heldout=row[2], new=row[3])
        dead = self._db.query("SELECT count(*) FROM dead_letters")[0][0]
        return BufferStats(tasks=tasks, dead_letters=dead)

    def pending(self) -> int:
        """Prompts not yet consumed by a round (what the buffer cap limits)."""
        return int(self._db.query("SELECT count(*) FROM prompts WHERE consumed_by IS NULL")[0][0])

    def training_prompts(self, limit: int, *, tasks: Sequence[str] | None = None) -> list[StoredPrompt]:
        """Up to `limit` unconsumed training prompts, newest first, taken round-robin across tasks."""
        per_task: dict[str, list[StoredPrompt]] = {}
        for row in self._db.query(
            "SELECT id, record, split, task FROM prompts WHERE split='train' AND consumed_by IS NULL ORDER BY id DESC"
        ):
            if tasks is None or row[3] in tasks:
                per_task.setdefault(row[3], []).append(StoredPrompt(row[0], PromptRecord.from_json(row[1]), row[2]))
        chosen: list[StoredPrompt] = []
        queues = [per_task[t] for t in sorted(per_task)]
        depth = 0
        while len(chosen) < limit and any(depth < len(q) for q in queues):
            chosen.extend(q[depth] for q in queues if depth < len(q))
            depth += 1
        return sorted(chosen[:limit], key=lambda p: p.id)

    def heldout(self, *, tasks: Sequence[str] | None = None) -> list[StoredPrompt]:
        rows = self._db.query("SELECT id, record, split, task FROM prompts WHERE split='heldout' ORDER BY id")
        return [StoredPrompt(r[0], PromptRecord.from_json(r[1]), r[2]) for r in rows if tasks is None or r[3] in tasks]

    def responses(
        self, *, since: float | None = None, before: float | None = None, limit: int = 200
    ) -> list[PromptRecord]:
        """The newest logged records that carry the served response, ingested in [since, before)."""
        rows = self._db.query(
            "SELECT record FROM prompts WHERE ingested_at >= ? AND ingested_at < ?"
            " AND json_extract(record, '$.response') IS NOT NULL ORDER BY id DESC LIMIT ?",
            (since or 0.0, before or float("inf"), limit),
        )
        return [PromptRecord.from_json(r[0]) for r in rows]

    def get(self, ids: Sequence[int]) -> list[StoredPrompt]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._db.query(f"SELECT id, record, split FROM prompts WHERE id IN ({marks}) ORDER BY id", tuple(ids))
        return [StoredPrompt(r[0], PromptRecord.from_json(r[1]), r[2]) for r in rows]

    def mark_consumed(self, ids: Sequence[int], round_id: int) -> None:
        with self._db.transaction() as conn:
            conn.executemany(
                "UPDATE prompts SET consumed_by=? WHERE id=? AND split='train'", [(round_id, i) for i in ids]
            )

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        rows = self._db.query(
            "SELECT id, source, origin, reason, detail, payload, created_at FROM dead_letters ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [DeadLetter(*tuple(r)) for r in rows]

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
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from taoflow.connectors.records import PromptRecord
from taoflow.daemon.store.erasure import chunks, record_trained
from taoflow.daemon.store.storage import Database, prompt_hash_key
from taoflow.policies.admission import plan_evictions
from taoflow.policies.split import assign_split

__all__ = [
    "BufferRow",
    "BufferStats",
    "DeadLetter",
    "DeadRow",
    "IngestResult",
    "Overflow",
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
    attempts: int = 0  # rounds that tried it and found nothing to learn in it


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
    evicted: int = 0


#: What a full buffer does with new prompts: keeps the newest window per task (`evict_oldest`), keeps a uniform
#: sample of each task's prompts (`reservoir`, by prompt hash), or makes the source wait (`pause`).
Overflow = Literal["evict_oldest", "reservoir", "pause"]
_EVICTION_ORDER = {"evict_oldest": "id", "reservoir": "prompt_hash DESC"}


def _count_inserted(conn: sqlite3.Connection, *, after: int) -> None:
    """Add the rows inserted past id `after` to the per-task counts: one grouped read of just those rows."""
    for task, train, heldout in conn.execute(
        "SELECT task, sum(split = 'train'), sum(split = 'heldout') FROM prompts WHERE id > ? GROUP BY task", (after,)
    ).fetchall():
        conn.execute(
            "INSERT INTO task_counts (task, train, heldout, new) VALUES (?, ?, ?, ?) ON CONFLICT (task) DO UPDATE"
            " SET train = train + excluded.train, heldout = heldout + excluded.heldout, new = new + excluded.new",
            (task, train, heldout, train),
        )


class PromptBuffer:
    """Prompts waiting for (or held out from) training rounds."""

    def __init__(
        self,
        db: Database,
        *,
        heldout_fraction: float,
        heldout_max_per_task: int,
        cap: int | None = None,
        overflow: Overflow = "pause",
        quotas: Mapping[str, int] | None = None,
    ) -> None:
        """`cap` bounds the untrained prompts; past it `overflow` decides (see Overflow), with `quotas` per task
        on top of the equal shares (policies/admission.py). Held-out prompts are never evicted."""
        self._db = db
        self._heldout_fraction = heldout_fraction
        self._heldout_max = heldout_max_per_task
        self.cap = cap
        self.overflow = overflow
        self._quotas = dict(quotas or {})
        if overflow == "reservoir":  # the sample's order: the prompt hash, uniform and the same on every replay
            with db.transaction() as conn:
                conn.execute(
                    "CREATE INDEX IF NOT EXISTS prompts_sample ON prompts (task, prompt_hash)"
                    " WHERE split = 'train' AND consumed_by IS NULL"
                )

    def full(self) -> bool:
        """Whether a source should wait: only when the overflow policy is `pause` and the cap is reached."""
        return self.overflow == "pause" and self.cap is not None and self.untrained() >= self.cap

    def untrained(self) -> int:
        """Training prompts no round has consumed yet (what the cap bounds)."""
        return int(self._db.query("SELECT coalesce(sum(new), 0) FROM task_counts")[0][0])

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
            heldout = Counter({row[0]: row[1] for row in conn.execute("SELECT task, heldout FROM task_counts")})
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
            last = conn.execute("SELECT coalesce(max(id), 0) FROM prompts").fetchone()[0]
            inserted = conn.executemany(
                "INSERT OR IGNORE INTO prompts (request_id, prompt_hash, origin, task, split, record, source,"
                " ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            added = max(0, inserted.rowcount)  # rows of this statement only (total_changes counts triggers too)
            if added:
                _count_inserted(conn, after=last)
            conn.executemany(_DEAD_LETTER_SQL, [(source, *d, now) for d in dead])
            evicted = self._evict(conn) if added else 0
            if also is not None:
                also(conn)
        return IngestResult(added=added, duplicates=len(values) - added, evicted=evicted)

    def _evict(self, conn: sqlite3.Connection) -> int:
        """Over the cap (with an evicting policy): let the planned prompts of each task go, counted."""
        if self.cap is None or self.overflow not in _EVICTION_ORDER:
            return 0
        new = {row[0]: row[1] for row in conn.execute("SELECT task, new FROM task_counts WHERE new > 0")}
        plan = plan_evictions(new, cap=self.cap, quotas=self._quotas)
        for task, count in plan.per_task.items():
            conn.execute(
                "DELETE FROM prompts WHERE id IN (SELECT id FROM prompts WHERE task = ? AND split = 'train'"
                f" AND consumed_by IS NULL ORDER BY {_EVICTION_ORDER[self.overflow]} LIMIT ?)",
                (task, count),
            )
            conn.execute(
                "INSERT INTO evictions (task, reason, count) VALUES (?, ?, ?)"
                " ON CONFLICT (task, reason) DO UPDATE SET count = count + excluded.count",
                (task, self.overflow, count),
            )
        return plan.total

    def stats(self) -> BufferStats:
        tasks = {
            row[0]: TaskCounts(train=row[1], heldout=row[2], new=row[3])
            for row in self._db.query(
                "SELECT task, train, heldout, new FROM task_counts WHERE train + heldout > 0 ORDER BY task"
            )
        }
        return BufferStats(tasks=tasks, dead_letters=sum(self.dead_letter_counts().values()))

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters per source (kept by triggers, as the task counts are)."""
        rows = self._db.query("SELECT name, value FROM counters WHERE name LIKE 'dead_letters:%'")
        return {str(r[0]).removeprefix("dead_letters:"): int(r[1]) for r in rows}

    def freshness(self) -> dict[str, tuple[float, float, float]]:
        """Per task, when its untrained prompts were ingested: (newest, about the median, oldest). Three index
        lookups a task, whatever the buffer holds; the median is the prompt halfway between the oldest and the
        newest id, which ingestion order makes close to the median time."""
        found: dict[str, tuple[float, float, float]] = {}
        where = "task = ? AND split = 'train' AND consumed_by IS NULL"
        for (task,) in self._db.query("SELECT task FROM task_counts WHERE new > 0"):
            newest = self._db.query(
                f"SELECT id, ingested_at FROM prompts WHERE {where} ORDER BY id DESC LIMIT 1", (task,)
            )
            oldest = self._db.query(f"SELECT id, ingested_at FROM prompts WHERE {where} ORDER BY id LIMIT 1", (task,))
            if not newest or not oldest:
                continue
            middle = self._db.query(
                f"SELECT ingested_at FROM prompts WHERE {where} AND id >= ? ORDER BY id LIMIT 1",
                (task, (newest[0][0] + oldest[0][0]) // 2),
            )
            found[task] = (float(newest[0][1]), float(middle[0][0]), float(oldest[0][1]))
        return found

    def pending(self) -> int:
        """Prompts not yet consumed by a round: untrained ones and the held-out set."""
        return int(self._db.query("SELECT coalesce(sum(new + heldout), 0) FROM task_counts")[0][0])

    def evictions(self) -> dict[tuple[str, str], int]:
        """Prompts let go to make room, by (task, overflow policy)."""
        return {(r[0], r[1]): int(r[2]) for r in self._db.query("SELECT task, reason, count FROM evictions")}

    def training_prompts(self, limit: int, *, tasks: Sequence[str] | None = None) -> list[StoredPrompt]:
        """Up to `limit` untrained prompts, taken round-robin across tasks: those earlier rounds tried without
        finding anything to learn first (up to half the limit, more when new ones are short), then new ones, each
        newest first. Reads only the rows it returns (each task's newest ids through an index, then those
        records)."""
        counts = {row[0]: row[1] for row in self._db.query("SELECT task, new FROM task_counts WHERE new > 0")}
        wanted = [task for task in sorted(counts) if tasks is None or task in tasks]
        retried = self._newest(wanted, "attempts > 0", limit)
        fresh = self._newest(wanted, "attempts = 0", limit)
        again = min(len(retried), max(limit // 2, limit - len(fresh)))
        return self.get(retried[:again] + fresh[: limit - again])

    def _newest(self, tasks: Sequence[str], which: str, limit: int) -> list[int]:
        """Up to `limit` ids of untrained prompts matching `which`, each task's newest first, round-robin."""
        queues = [
            [
                r[0]
                for r in self._db.query(
                    "SELECT id FROM prompts WHERE task = ? AND split = 'train' AND consumed_by IS NULL"
                    f" AND {which} ORDER BY id DESC LIMIT ?",
                    (task, limit),
                )
            ]
            for task in tasks
        ]
        return _round_robin(queues, limit)

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

    def request_ids_from(self, source: str, origin_prefix: str) -> list[str]:
        """Request ids of the prompts a source stored from origins that start with `origin_prefix` (a file's)."""
        rows = self._db.query(
            "SELECT request_id FROM prompts WHERE source = ? AND substr(origin, 1, ?) = ?",
            (source, len(origin_prefix), origin_prefix),
        )
        return [str(r[0]) for r in rows]

    def get(self, ids: Sequence[int]) -> list[StoredPrompt]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = self._db.query(
            f"SELECT id, record, split, attempts FROM prompts WHERE id IN ({marks}) ORDER BY id", tuple(ids)
        )
        return [StoredPrompt(r[0], PromptRecord.from_json(r[1]), r[2], r[3]) for r in rows]

    def mark_consumed(
        self,
        ids: Sequence[int],
        round_id: int,
        *,
        not_trained: Collection[str] = (),
        unsolved: Collection[int] = (),
        retries: int = 0,
    ) -> list[int]:
        """The round trained on these prompts. Those erased meanwhile (but after the round's training began: not
        among the request ids `not_trained`) become tombstones of this round. Of the `unsolved` ones (the round
        found nothing to learn in them), those tried fewer than `retries` times stay for a later round with one
        more attempt counted; returns their ids."""
        with self._db.transaction() as conn:
            again: list[int] = []
            wanted = set(unsolved)
            for chunk in chunks([i for i in ids if i in wanted], 500):
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT id, attempts, tried_by FROM prompts WHERE id IN ({marks}) AND split = 'train'", chunk
                ).fetchall()
                # A round resumed after this committed finds its tries counted already: it counts none twice.
                again += [r[0] for r in rows if r[2] == round_id]
                counted = [r[0] for r in rows if r[2] != round_id and r[1] < retries]
                conn.executemany(
                    "UPDATE prompts SET attempts = attempts + 1, tried_by = ? WHERE id = ?",
                    [(round_id, i) for i in counted],
                )
                again += counted
            kept = set(again)
            done = [i for i in ids if i not in kept]
            conn.executemany(
                "UPDATE prompts SET consumed_by=? WHERE id=? AND split='train'", [(round_id, i) for i in done]
            )
            record_trained(conn, done, round_id, not_trained=not_trained)
        return again

    def dead_letters(self, *, limit: int = 100) -> list[DeadLetter]:
        rows = self._db.query(
            "SELECT id, source, origin, reason, detail, payload, created_at FROM dead_letters ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [DeadLetter(*tuple(r)) for r in rows]


def _round_robin(queues: Sequence[Sequence[int]], limit: int) -> list[int]:
    """Up to `limit` ids, one from each queue in turn."""
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit and any(depth < len(q) for q in queues):
        chosen.extend(q[depth] for q in queues if depth < len(q))
        depth += 1
    return chosen[:limit]

"""Retention: what the state database lets go of, so its file stays bounded under a steady stream.

- prompts that rounds consumed more than `consumed_text_days` ago: moved to `retired_prompts` without their
  text — request id, prompt hash, task and round stay, so dedup, erasure and lineage still work — and their
  rows deleted (whole pages free up: emptying the text in place would leave every page of the table holding
  one small row);
- dead letters older than `dead_letter_days`, and the oldest beyond `dead_letter_max`.

Deletes run in small transactions (ingest interleaves with them), then an incremental vacuum returns the freed
pages to the file system where the file allows it (state files created by this version do), and a checkpoint
truncates the file (until one completes, the vacuumed file's end lives on in the WAL).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from taoflow.daemon.store.storage import Database

__all__ = ["RetentionPolicy", "RetentionReport", "apply_retention"]

log = logging.getLogger(__name__)

#: Rows changed per transaction: small enough that a writer waiting behind one hardly notices.
BATCH = 2000
#: Pages returned to the file system per vacuum step (32 MiB with 16 KiB pages).
VACUUM_PAGES = 2048


@dataclass(frozen=True)
class RetentionPolicy:
    consumed_text_days: float | None = 30.0
    dead_letter_days: float | None = 30.0
    dead_letter_max: int | None = 100_000


@dataclass
class RetentionReport:
    texts_dropped: int = 0  # consumed prompts retired (their text gone)
    dead_letters_deleted: int = 0
    pages_freed: int = 0


def apply_retention(db: Database, policy: RetentionPolicy, *, now: float | None = None) -> RetentionReport:
    now = time.time() if now is None else now
    report = RetentionReport()
    if policy.consumed_text_days is not None:
        report.texts_dropped = _retire(db, before=now - policy.consumed_text_days * 86400, now=now)
    if policy.dead_letter_days is not None:
        before = now - policy.dead_letter_days * 86400
        report.dead_letters_deleted += _in_batches(
            db,
            "DELETE FROM dead_letters WHERE id IN"
            " (SELECT id FROM dead_letters WHERE created_at < ? ORDER BY id LIMIT ?)",
            (before,),
        )
    if policy.dead_letter_max is not None:
        held = int(db.query("SELECT coalesce(sum(value), 0) FROM counters WHERE name LIKE 'dead_letters:%'")[0][0])
        if held > policy.dead_letter_max:
            with db.transaction() as conn:
                conn.execute(
                    "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)",
                    (held - policy.dead_letter_max,),
                )
            report.dead_letters_deleted += held - policy.dead_letter_max
    report.pages_freed = _vacuum(db)
    if report.pages_freed and not db.checkpoint():
        # The pages are free either way; the file shrinks at the next checkpoint that completes.
        log.info(
            "retention freed %d pages; the file shrinks at a later checkpoint (readers held this one)",
            report.pages_freed,
        )
    return report


def _retire(db: Database, *, before: float, now: float) -> int:
    """Consumed prompts of rounds that ended before `before`: kept as retired rows, their text gone."""
    done = 0
    while True:
        with db.transaction() as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "SELECT p.id FROM rounds r JOIN prompts p ON p.consumed_by = r.id"
                    " WHERE r.status != 'running' AND r.updated_at < ? LIMIT ?",
                    (before, BATCH),
                )
            ]
            marks = ",".join("?" * len(ids))
            conn.execute(
                "INSERT OR IGNORE INTO retired_prompts (request_id, prompt_hash, task, consumed_by, ingested_at,"
                f" retired_at) SELECT request_id, prompt_hash, task, consumed_by, ingested_at, ? FROM prompts"
                f" WHERE id IN ({marks})",
                (now, *ids),
            )
            conn.execute(f"DELETE FROM prompts WHERE id IN ({marks})", ids)
        done += len(ids)
        if len(ids) < BATCH:
            return done


def _in_batches(db: Database, sql: str, params: tuple[object, ...]) -> int:
    done = 0
    while True:
        with db.transaction() as conn:
            changed = conn.execute(sql, (*params, BATCH)).rowcount
        done += max(0, changed)
        if changed < BATCH:
            return done


def _vacuum(db: Database) -> int:
    """Give free pages back to the file system, a step at a time; nothing where the file has no auto-vacuum."""
    if db.query("PRAGMA auto_vacuum")[0][0] != 2:  # 2: incremental
        return 0
    start = free = int(db.query("PRAGMA freelist_count")[0][0])
    while free > 0:
        db.vacuum_step(VACUUM_PAGES)
        left = int(db.query("PRAGMA freelist_count")[0][0])
        if left >= free:
            break  # nothing more to give back now
        free = left
    return start - free

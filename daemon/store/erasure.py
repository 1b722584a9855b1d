"""Erasures: prompts removed at their source's request, and what had already been trained on them.

An erasure comes from the source (a Delta commit that deletes rows: DELETE, MERGE, an erasure request) or from
an operator (`taoflow forget`, the admin API), by request id or prompt hash. It removes every copy taoflow
holds: the prompt's row (untrained, held out or consumed), its retired row (text already gone), and its dead
letters. What stays is a row of `erasures` — request id, prompt hash, task, and the round that had trained on
it, if one had — which keeps the prompt out for good (the buffer's insert trigger refuses it) and tells an
operator which adapter versions hold it (`taoflow buffer --erased`, a metric, an alert).

A prompt a round trained on is a *tombstone*: its text is gone, its round stays; the operator decides whether
to retrain or roll back. Rounds never take an erased prompt again (the row is gone), and a round already under
way drops the ones erased before it trains (daemon/round/local_stages.py, ray_stages.py) and records the ones
erased after.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from taoflow.connectors.errors import InvalidRequest
from taoflow.connectors.records import PromptRecord
from taoflow.daemon.store.round_files import RoundFiles
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.storage import Database, prompt_hash_key
from taoflow.policies.erasure import ErasureKey

__all__ = [
    "ErasedPrompt",
    "ErasureKey",
    "ErasureReport",
    "chunks",
    "erase",
    "erased",
    "erased_request_ids",
    "erasure_counts",
    "erasure_summary",
    "finish_erasure",
    "forget",
    "recently_erased",
    "record_trained",
    "report_counts",
    "scrub_rounds",
    "trained_by_version",
]

T = TypeVar("T")

log = logging.getLogger(__name__)

#: The fewest characters a `forget` text match may have: a short one would erase half the buffer.
MIN_MATCH_CHARS = 8


@dataclass
class ErasureReport:
    deleted: int = 0  # prompts no round had trained on (training or held out): gone
    tombstoned: int = 0  # prompts a round had trained on: gone, their round kept
    dead_letters: int = 0  # dead letters of the erased records: gone
    blocked: int = 0  # requests taoflow did not hold: recorded, so they never come in
    #: The buffer rows that went, by id, with their request ids (the files of rounds that took them follow).
    prompts: dict[int, str] = field(default_factory=dict)
    #: Round directories that could not be found: files there (if they exist somewhere) may still hold the text.
    unscrubbed: list[str] = field(default_factory=list)
    #: Whether the WAL was checkpointed and truncated after the erasure (no copy of the text left in it).
    checkpointed: bool = True
    #: The start of a few matched prompts' messages (a text erasure's dry run shows them to the operator).
    sample: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.deleted + self.tombstoned + self.dead_letters + self.blocked

    def add(self, other: ErasureReport) -> None:
        self.deleted += other.deleted
        self.tombstoned += other.tombstoned
        self.dead_letters += other.dead_letters
        self.blocked += other.blocked
        self.prompts.update(other.prompts)
        self.unscrubbed += other.unscrubbed
        self.checkpointed = self.checkpointed and other.checkpointed


@dataclass(frozen=True)
class ErasedPrompt:
    """An erased prompt that a round had trained on, with the adapter that round made (if it got that far)."""

    request_id: str | None
    task: str | None
    reason: str
    erased_at: float
    round_id: int
    version: str | None
    state: str | None  # the adapter's registry state: champion means it serves


def erase(
    conn: sqlite3.Connection,
    keys: Iterable[ErasureKey],
    *,
    reason: str,
    dead_origins: Sequence[tuple[str, str]] = (),
    dead_payloads: Sequence[bytes] = (),
    now: float | None = None,
) -> ErasureReport:
    """Erase in the caller's transaction (a source erases in the one that moves its checkpoint).

    `dead_origins` ((source, origin) pairs) and `dead_payloads` name dead letters of erased records that never
    parsed into a prompt."""
    now = time.time() if now is None else now
    report = ErasureReport()
    for key in keys:
        _erase_one(conn, key, reason=reason, now=now, report=report)
    for source, origin in dead_origins:
        report.dead_letters += conn.execute(
            "DELETE FROM dead_letters WHERE source = ? AND origin = ?", (source, origin)
        ).rowcount
    for chunk in chunks(list(dead_payloads), 200):
        marks = ",".join("?" * len(chunk))
        report.dead_letters += conn.execute(f"DELETE FROM dead_letters WHERE payload IN ({marks})", chunk).rowcount
    return report


def _erase_one(conn: sqlite3.Connection, key: ErasureKey, *, reason: str, now: float, report: ErasureReport) -> None:
    """Every held copy that the key names goes. What is recorded keeps out what the key names, no more: a request
    and its text; a request alone (its text live elsewhere in the source); a text alone (a row whose text was
    replaced keeps its request id)."""
    hashed = prompt_hash_key(key.prompt_hash) if key.prompt_hash else None
    held = conn.execute(
        "SELECT id, request_id, prompt_hash, task, consumed_by FROM prompts WHERE request_id = ?"
        " UNION SELECT id, request_id, prompt_hash, task, consumed_by FROM prompts WHERE prompt_hash = ?",
        (key.request_id, hashed),
    ).fetchall()
    retired = conn.execute(
        "SELECT rowid, request_id, prompt_hash, task, consumed_by FROM retired_prompts WHERE request_id = ?"
        " UNION SELECT rowid, request_id, prompt_hash, task, consumed_by FROM retired_prompts WHERE prompt_hash = ?",
        (key.request_id, hashed),
    ).fetchall()
    for table, rows in (("prompts", held), ("retired_prompts", retired)):
        for row_id, request_id, prompt_hash, task, consumed_by in rows:
            _record(
                conn,
                request_id if key.request_id is not None else None,
                None if key.text_live else prompt_hash,
                task,
                row_id if table == "prompts" else None,
                consumed_by,
                reason,
                now,
            )
            conn.execute(f"DELETE FROM {table} WHERE {'id' if table == 'prompts' else 'rowid'} = ?", (row_id,))
            if table == "prompts":
                report.prompts[row_id] = request_id
            if consumed_by is None:
                report.deleted += 1
            else:
                report.tombstoned += 1
    if key.request_id is not None and key.request_id not in {row[1] for row in [*held, *retired]}:
        # Not held under this request id (or not held at all): recorded, so that it never comes in.
        if not _known(conn, key.request_id, None):
            _record(conn, key.request_id, hashed, None, None, None, reason, now)
            report.blocked += not held and not retired
    elif key.request_id is None and not held and not retired and not _known(conn, None, hashed):
        _record(conn, None, hashed, None, None, None, reason, now)
        report.blocked += 1


def _known(conn: sqlite3.Connection, request_id: str | None, prompt_hash: bytes | None) -> bool:
    if request_id is not None:
        return conn.execute("SELECT 1 FROM erasures WHERE request_id = ?", (request_id,)).fetchone() is not None
    return conn.execute("SELECT 1 FROM erasures WHERE prompt_hash = ?", (prompt_hash,)).fetchone() is not None


def _record(
    conn: sqlite3.Connection,
    request_id: str | None,
    prompt_hash: bytes | None,
    task: str | None,
    prompt_id: int | None,
    consumed_by: int | None,
    reason: str,
    now: float,
) -> None:
    conn.execute(
        "INSERT INTO erasures (request_id, prompt_hash, task, prompt_id, consumed_by, reason, erased_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (request_id, prompt_hash, task, prompt_id, consumed_by, reason[:200], now),
    )


def forget(
    db: Database,
    *,
    rounds_dir: Path,
    request_ids: Sequence[str] = (),
    texts: Sequence[str] = (),
    reason: str,
    limit: int = 1000,
    max_share: float = 0.25,
    dry_run: bool = False,
) -> ErasureReport:
    """An erasure request from outside the source: by request id, or every prompt whose messages contain one of
    `texts` (case-sensitive; at least MIN_MATCH_CHARS characters). Refused when the texts match more than
    `limit` prompts, or one text more than `max_share` of a task's prompts (beyond a handful): a match too broad
    to be meant. `dry_run` reports what would go (with a sample of the matched prompts) and changes nothing."""
    for text in texts:
        if len(text.strip()) < MIN_MATCH_CHARS:
            raise InvalidRequest(
                f"a text to forget needs at least {MIN_MATCH_CHARS} characters: {len(text.strip())} would match "
                "too much; forget by request id instead"
            )
    with db.transaction() as conn:
        keys = [ErasureKey(request_id=r) for r in request_ids]
        held = dict(conn.execute("SELECT task, count(*) FROM prompts GROUP BY task").fetchall())
        matched: list[ErasureKey] = []
        sample: list[str] = []
        for number, text in enumerate(texts, 1):
            found = _text_matches(conn, text)
            _refuse_broad(number, [task for _, task, _ in found], held, max_share)
            matched += [key for key, _, _ in found]
            sample += [preview for _, _, preview in found[:3]]
        if len(matched) > limit:
            raise InvalidRequest(
                f"the texts match {len(matched)} prompts, more than the limit of {limit}: check the text, "
                "or raise --limit if all of them are meant"
            )
        payloads = [_dead_payloads(conn, request_id=r) for r in request_ids]
        payloads += [_dead_payloads(conn, text=t) for t in texts]
        report = erase(
            conn,
            [*keys, *matched],
            reason=reason,
            dead_payloads=[p for found in payloads for p in found],
        )
        report.sample = sample[:3]
        if dry_run:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN")  # the transaction's own COMMIT then ends an empty one
    if not dry_run:
        finish_erasure(db, rounds_dir, report)
    return report


def finish_erasure(db: Database, rounds_dir: Path, report: ErasureReport) -> None:
    """After an erasure's transaction: the files of the rounds that took the prompts scrubbed, and the WAL
    checkpointed and truncated, so no copy of an erased text stays on disk (the database deletes with
    `secure_delete`: the freed space is zeroed)."""
    if not (report.prompts or report.dead_letters):
        return
    report.unscrubbed = scrub_rounds(db, rounds_dir, report.prompts)
    report.checkpointed = db.checkpoint()
    if report.unscrubbed:
        log.error(
            "erasure: %d round directories cannot be found (%s): the database holds no copy of the erased prompts,"
            " but files of those rounds, wherever they are, may",
            len(report.unscrubbed),
            ", ".join(report.unscrubbed[:5]),
        )
    if not report.checkpointed:
        log.warning(
            "erasure: readers kept the WAL from being truncated: the erased texts leave it at its next checkpoint"
        )


def _text_matches(conn: sqlite3.Connection, text: str) -> list[tuple[ErasureKey, str, str]]:
    """The prompts whose messages contain `text`, each with its task and the start of its message: a scan of the
    stored records (JSON-escaped as stored), then a check of the messages themselves (a match in a response or
    metadata is not a match)."""
    escaped = json.dumps(text, ensure_ascii=False)[1:-1]
    found = []
    for request_id, record in conn.execute("SELECT request_id, record FROM prompts WHERE instr(record, ?)", (escaped,)):
        parsed = PromptRecord.from_json(record)
        hit = next((m.content for m in parsed.messages if text in m.content), None)
        if hit is not None:
            key = ErasureKey(request_id=request_id, prompt_hash=parsed.prompt_hash)
            found.append((key, parsed.task, f"[{parsed.task}] {hit[:100]}"))
    return found


#: Matches of one text that are never too broad, whatever the task's size.
_FEW = 5


def _refuse_broad(number: int, tasks: Sequence[str], held: Mapping[str, int], max_share: float) -> None:
    """A text matching more than `max_share` of a task's prompts (and more than a few) is not one person's text."""
    for task, count in Counter(tasks).items():
        total = held.get(task, count)
        if count > _FEW and count > max_share * total:
            raise InvalidRequest(
                f"text {number} matches {count} of the {total} prompts of task {task!r} (more than "
                f"{max_share:.0%}): too broad to be one request's text; check it with --dry-run, or raise "
                "--max-share if all of them are meant"
            )


def _dead_payloads(conn: sqlite3.Connection, *, request_id: str | None = None, text: str | None = None) -> list[bytes]:
    """Dead letters that hold a request id (as a JSON string) or a text (raw or JSON-escaped)."""
    needles: list[bytes] = []
    if request_id is not None:
        needles.append(json.dumps(request_id).encode())
    if text is not None:
        needles += [text.encode(), json.dumps(text)[1:-1].encode(), json.dumps(text, ensure_ascii=False)[1:-1].encode()]
    found: list[bytes] = []
    for needle in dict.fromkeys(needles):
        found += [
            bytes(r[0]) for r in conn.execute("SELECT payload FROM dead_letters WHERE instr(payload, ?)", (needle,))
        ]
    return found


def scrub_rounds(db: Database, rounds_dir: Path, prompts: Mapping[int, str]) -> list[str]:
    """Take erased prompts (buffer id -> request id) out of the files of the rounds that took them (candidates and
    scores; a round's adapter manifest holds only hashes). Returns the round directories that cannot be found
    (a round stored with a relative directory is looked for under `rounds_dir`)."""
    if not prompts:
        return []
    rounds = RoundStore(db, rounds_dir)
    missing = []
    for (stored,) in db.query("SELECT work_dir FROM rounds"):
        directory = rounds.work_dir(stored)
        if not directory.is_dir():
            missing.append(str(directory))
            continue
        files = RoundFiles(directory)
        try:
            taken = set(files.prompts().ids) & prompts.keys()
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a round that never got its prompts
        if taken:
            files.scrub({prompts[i] for i in taken})
    return missing


def record_trained(
    conn: sqlite3.Connection, prompt_ids: Sequence[int], round_id: int, *, not_trained: Collection[str] = ()
) -> int:
    """Prompts of a round erased while it ran, that its training still saw (their request ids are not among
    `not_trained`): tombstones of that round. Returns how many."""
    changed = 0
    for chunk in chunks(list(prompt_ids), 500):
        marks = ",".join("?" * len(chunk))
        for erasure_id, request_id in conn.execute(
            f"SELECT id, request_id FROM erasures WHERE consumed_by IS NULL AND prompt_id IN ({marks})", chunk
        ).fetchall():
            if request_id not in not_trained:
                conn.execute("UPDATE erasures SET consumed_by = ? WHERE id = ?", (round_id, erasure_id))
                changed += 1
    return changed


def recently_erased(db: Database, *, within_s: float = 900.0, limit: int = 1000) -> list[str]:
    """Request ids erased in the last `within_s` seconds, newest first: what gateways drop from their spools
    (a record waits there seconds, until the sink has it)."""
    rows = db.query(
        "SELECT request_id FROM erasures WHERE request_id IS NOT NULL AND erased_at >= ? ORDER BY id DESC LIMIT ?",
        (time.time() - within_s, limit),
    )
    return [str(r[0]) for r in rows]


def erased_request_ids(db: Database, request_ids: Sequence[str]) -> set[str]:
    """Which of `request_ids` have been erased."""
    found: set[str] = set()
    for chunk in chunks(list(request_ids), 500):
        marks = ",".join("?" * len(chunk))
        found |= {
            r[0] for r in db.query(f"SELECT request_id FROM erasures WHERE request_id IN ({marks})", tuple(chunk))
        }
    return found


def erased_prompts(db: Database, prompt_ids: Sequence[int]) -> set[str]:
    """Request ids of the buffer prompts among `prompt_ids` that have been erased (their rows are gone; their
    erasures keep which prompt they were)."""
    found: set[str] = set()
    for chunk in chunks(list(prompt_ids), 500):
        marks = ",".join("?" * len(chunk))
        rows = db.query(f"SELECT request_id FROM erasures WHERE prompt_id IN ({marks})", tuple(chunk))
        found |= {str(r[0]) for r in rows if r[0] is not None}
    return found


def erased(db: Database, *, limit: int = 100) -> list[ErasedPrompt]:
    """The newest tombstones: erased prompts a round had trained on, with that round's adapter."""
    rows = db.query(
        "SELECT e.request_id, e.task, e.reason, e.erased_at, e.consumed_by, r.version, a.state FROM erasures e"
        " LEFT JOIN rounds r ON r.id = e.consumed_by LEFT JOIN adapters a ON a.version = r.version"
        " WHERE e.consumed_by IS NOT NULL ORDER BY e.id DESC LIMIT ?",
        (limit,),
    )
    return [ErasedPrompt(*tuple(r)) for r in rows]


def erasure_counts(db: Database) -> dict[str, int]:
    """Erasures recorded: of prompts a round had trained on (`trained`), and the rest (`untrained`)."""
    row = db.query("SELECT count(consumed_by), count(*) - count(consumed_by) FROM erasures")[0]
    return {"trained": int(row[0]), "untrained": int(row[1])}


def trained_by_version(db: Database) -> dict[tuple[str, str], int]:
    """Erased prompts per adapter that was trained on them, as (version, registry state) -> count."""
    rows = db.query(
        "SELECT r.version, a.state, count(*) FROM erasures e JOIN rounds r ON r.id = e.consumed_by"
        " JOIN adapters a ON a.version = r.version GROUP BY r.version, a.state"
    )
    return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}


def chunks(items: list[T], size: int) -> Iterable[list[T]]:
    """`items` in lists of at most `size` (SQLite's bound parameters per statement are limited)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def erasure_summary(db: Database, *, limit: int = 100) -> dict[str, Any]:
    """What `taoflow buffer --erased -o json` and GET /v1/erasures answer: counts, the adapters trained on erased
    prompts (with their registry state), and the newest such prompts."""
    return {
        "counts": erasure_counts(db),
        "adapters": [
            {"version": version, "state": state, "prompts": count}
            for (version, state), count in sorted(trained_by_version(db).items())
        ],
        "trained_on": [
            {
                "request_id": e.request_id,
                "task": e.task,
                "reason": e.reason,
                "erased_at": e.erased_at,
                "round": e.round_id,
                "version": e.version,
                "state": e.state,
            }
            for e in erased(db, limit=limit)
        ],
    }


def report_counts(report: ErasureReport) -> dict[str, int]:
    """An erasure's counts as the CLI and the admin API name them."""
    return {
        "deleted": report.deleted,
        "trained_on": report.tombstoned,
        "dead_letters": report.dead_letters,
        "kept_out": report.blocked,
    }

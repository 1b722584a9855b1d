"""The Delta source's ingest loop: a table followed version by version, its deletes erased from the buffer.

Each poll reads the versions after the checkpoint (`table_versions`), at most `max_versions` at a time:

- versions that only add data (appends) have their new files stored through the object pipeline (downloaded
  and parsed ahead, each file's rows and its checkpoint in one transaction: a restart never reads a stored
  file again);
- a version that removes data (DELETE, UPDATE, MERGE, an overwrite) is taken alone: the rows its removed files
  (or change data) held and its added files do not hold any more are erased from the buffer (by request id;
  by prompt where a row's text was replaced), then its added files are stored like an append's;
- a version that changes no data (OPTIMIZE, VACUUM, a checkpoint) reads nothing.

The checkpoint moves after each group of versions. A crash between two steps repeats the last one: stored files
are skipped, erasures are idempotent. A first start reads the snapshot of the current version (the checkpoint
says so while it does: a restart finishes that snapshot, then reads the versions after it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.sources.delta import INSERTED, DeltaCommit, DeltaFile, DeltaSource
from taoflow.connectors.sources.formats import check_columns
from taoflow.daemon.ingest.ingestor import Ingestor, IngestReport
from taoflow.daemon.ingest.metrics import IngestMetrics
from taoflow.daemon.ingest.streaming import IngestProgress, ObjectLoader
from taoflow.daemon.store import cursors
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.cursors import TableCheckpoint
from taoflow.daemon.store.erasure import ErasureReport, erase, finish_erasure
from taoflow.daemon.store.storage import Database
from taoflow.policies.erasure import ErasureKey, erasures_of_removed_rows

__all__ = ["DeltaReport", "TableCheckpoint", "ingest_delta", "table_checkpoint"]

log = logging.getLogger(__name__)


@dataclass
class DeltaReport(IngestReport):
    versions: int = 0
    bytes_read: int = 0
    erased: ErasureReport = field(default_factory=ErasureReport)


def table_checkpoint(db: Database, source: DeltaSource) -> TableCheckpoint | None:
    return cursors.table_checkpoint(db, source.name, source.uri)


def ingest_delta(
    source: DeltaSource,
    ingestor: Ingestor,
    buffer: PromptBuffer,
    db: Database,
    *,
    stop: threading.Event,
    follow: bool,
    poll_interval_s: float = 30.0,
    prefetch: int = 8,
    parse_processes: int = 0,
    max_versions: int = 100,
    metrics: IngestMetrics | None = None,
    on_healthy: Callable[[], None] | None = None,
    progress_every_s: float = 60.0,
    rounds_dir: Path | None = None,
) -> DeltaReport:
    """Follow the table until `stop` (or, without `follow`, until it is caught up); return the totals."""
    totals = DeltaReport()
    progress = IngestProgress(source.name, every_s=progress_every_s)
    check_columns(source.columns(), ingestor.preparer.field_map)
    run = _Run(source, ingestor, buffer, db, totals, stop=stop, metrics=metrics)
    if rounds_dir is not None:
        run.rounds_dir = rounds_dir
    with ObjectLoader(source, ingestor.preparer, prefetch=prefetch, processes=parse_processes) as loader:
        run.loader = loader
        while not stop.is_set():
            latest = source.latest_version()
            if on_healthy is not None:
                on_healthy()  # the table answered
            if metrics is not None:
                metrics.last_poll.labels(source.name).set(time.time())
            checkpoint = table_checkpoint(db, source)
            progress.report(
                totals, f"table at version {latest}, ingested to {checkpoint.version if checkpoint else '-'}"
            )
            caught_up = run.poll(checkpoint, latest, max_versions=max_versions)
            if caught_up is not False:  # caught up; or stopped, or a `pause` buffer at its cap: wait for room
                if not follow:
                    break
                stop.wait(poll_interval_s)
    return totals


class _Run:
    def __init__(
        self,
        source: DeltaSource,
        ingestor: Ingestor,
        buffer: PromptBuffer,
        db: Database,
        totals: DeltaReport,
        *,
        stop: threading.Event,
        metrics: IngestMetrics | None,
    ) -> None:
        self.source = source
        self.ingestor = ingestor
        self.buffer = buffer
        self.db = db
        self.rounds_dir = db.path.parent / "rounds"  # the state directory's, beside its database
        self.totals = totals
        self.stop = stop
        self.metrics = metrics
        self.loader: ObjectLoader[DeltaFile] | None = None

    def poll(self, checkpoint: TableCheckpoint | None, latest: int, *, max_versions: int) -> bool | None:
        """Read what follows the checkpoint: True when caught up with `latest`, False when more versions follow,
        None when stopped or paused before the end."""
        if checkpoint is None:
            after = self.source.start_after()
            if after is None:  # the snapshot, recorded first: a restart finishes this one
                cursors.set_table_checkpoint(self.db, self.source.name, self.source.uri, latest, snapshot=True)
                checkpoint = TableCheckpoint(latest, snapshot=True)
            else:
                checkpoint = TableCheckpoint(after, snapshot=False)
        if checkpoint.snapshot:
            if not self._ingest([self.source.snapshot(checkpoint.version)]):
                return None
            return checkpoint.version >= latest
        last = min(latest, checkpoint.version + max_versions)
        commits = self.source.commits(range(checkpoint.version + 1, last + 1))
        if not commits:
            return True
        if not self._ingest(commits):
            return None
        return last >= latest

    def _ingest(self, commits: Sequence[DeltaCommit]) -> bool:
        """Each commit in order; appends together, a commit that removes data alone. False when stopped."""
        started_bytes, started = self.totals.bytes_read, self.totals.added
        appends: list[DeltaCommit] = []
        erased = ErasureReport()
        for commit in commits:
            if commit.removed or commit.change_data:
                if not self._store(appends):
                    return False
                appends = []
                erased.add(self._erase(commit))
                if not self._store([commit]):
                    return False
            else:
                appends.append(commit)
        if not self._store(appends):
            return False
        self.totals.versions += len(commits)
        log.info(
            "%s %s: version%s %s (%s): read %d bytes, added %d; erased %d (deleted %d, trained on %d, "
            "dead letters %d, kept out %d)",
            self.source.name,
            self.source.uri,
            "s" if len(commits) > 1 else "",
            _span(commits),
            ", ".join(sorted({c.operation for c in commits})),
            self.totals.bytes_read - started_bytes,
            self.totals.added - started,
            erased.total,
            erased.deleted,
            erased.tombstoned,
            erased.dead_letters,
            erased.blocked,
        )
        return True

    def _store(self, commits: Sequence[DeltaCommit]) -> bool:
        """The commits' added files (those not stored yet), then the checkpoint past the last commit."""
        if not commits:
            return True
        assert self.loader is not None
        done = cursors.ingested_objects(self.db, self.source.name)
        files = [f for c in commits for f in c.added if (f.key, f.etag) not in done]
        before = self.loader.bytes_read
        complete = self.loader.store(
            files, self.ingestor, self.buffer, self.totals, stop=self.stop, metrics=self.metrics
        )
        if complete:
            stored = cursors.ingested_objects(self.db, self.source.name)
            if any((f.key, f.etag) not in stored for f in files):
                complete = self._store_live(commits[-1].version)
        self.totals.bytes_read += self.loader.bytes_read - before
        if not complete:
            return False
        cursors.set_table_checkpoint(self.db, self.source.name, self.source.uri, commits[-1].version)
        if self.metrics is not None:
            self.metrics.table_version.labels(self.source.name).set(commits[-1].version)
        return True

    def _store_live(self, version: int) -> bool:
        """Files added up to `version` that are gone (compacted and vacuumed since: taoflow was behind for longer
        than the table keeps removed files): their rows that are still live are in the files of the current
        snapshot, which are stored instead (what was stored already counts as duplicates)."""
        assert self.loader is not None
        snapshot = self.source.snapshot(self.source.latest_version())
        log.warning(
            "%s: files added by versions up to %d are gone already (vacuumed); storing the %d files of the live "
            "table at version %d instead",
            self.source.uri,
            version,
            len(snapshot.added),
            snapshot.version,
        )
        done = cursors.ingested_objects(self.db, self.source.name)
        files = [f for f in snapshot.added if (f.key, f.etag) not in done]
        return self.loader.store(files, self.ingestor, self.buffer, self.totals, stop=self.stop, metrics=self.metrics)

    def _erase(self, commit: DeltaCommit) -> ErasureReport:
        """Erase what the commit removed: rows of its removed files (or its change data's deletes) that its added
        files (or its change data's inserts) do not hold any more."""
        preparer = self.ingestor.preparer
        kept_ids: set[str] = set()
        kept_hashes: set[str] = set()
        removed: list[SourceItem] = []
        kept: list[SourceItem] = []
        added = [(file, self._rows(file)) for file in commit.added]
        if any(rows is None for _, rows in added):
            # A file the commit added is gone already (rewritten and vacuumed since): what the commit kept
            # is read from the table as it is now (a row live now was not erased).
            log.warning(
                "%s: a file version %d added is gone already (vacuumed); reading the live table to tell its "
                "deletes from its rewrites",
                self.source.uri,
                commit.version,
            )
            kept += self.source.live_rows()
        for _, rows in added:
            for item, change in rows or ():
                (kept if change in INSERTED else removed).append(item)
        for item in kept:
            found = preparer.identify(item)
            if found is not None:
                kept_ids.add(found[0])
                kept_hashes.add(found[1])
        gone: list[DeltaFile] = []
        for file in commit.removed:
            rows = self._rows(file)
            if rows is None:
                gone.append(file)
            removed += [item for item, _ in rows or ()]
        decision = erasures_of_removed_rows([preparer.identify(item) for item in removed], kept_ids, kept_hashes)
        keys, dead = list(decision.keys), [removed[i] for i in decision.unparsed]
        log.debug("%s: version %d: %s", self.source.uri, commit.version, decision.reason)
        keys += self._vacuumed(gone, kept_ids)
        reason = f"{commit.operation} at version {commit.version} of {self.source.uri}"
        with self.db.transaction() as conn:
            report = erase(
                conn,
                keys,
                reason=reason,
                dead_origins=[(self.source.name, item.origin) for item in dead],
                dead_payloads=[preparer.dead_payload(item) for item in dead],
            )
        finish_erasure(self.db, self.rounds_dir, report)
        self.totals.erased.add(report)
        if self.metrics is not None:
            for kind, count in (
                ("deleted", report.deleted),
                ("tombstoned", report.tombstoned),
                ("dead_letter", report.dead_letters),
                ("blocked", report.blocked),
            ):
                self.metrics.erased.labels(self.source.name, kind).inc(count)
        if report.tombstoned:
            log.warning(
                "%s: %d erased prompts had been trained on by rounds; `taoflow buffer --erased` lists the adapter "
                "versions that hold them (retrain or roll back)",
                reason,
                report.tombstoned,
            )
        return report

    def _rows(self, file: DeltaFile) -> list[tuple[SourceItem, str]] | None:
        body = self.source.fetch(file)
        if body is None:
            return None
        self.totals.bytes_read += len(body)
        if self.metrics is not None:
            self.metrics.bytes_read.labels(self.source.name).inc(len(body))
        return list(self.source.rows(file, body))

    def _vacuumed(self, files: Sequence[DeltaFile], kept_ids: set[str]) -> list[ErasureKey]:
        """Removed files that are gone already (vacuumed before this poll): their rows cannot be read, so the
        prompts stored from them (by origin) that the commit did not keep are erased."""
        keys: list[ErasureKey] = []
        for file in files:
            prefix = f"{self.source.uri}/{file.path}:"
            rows = self.buffer.request_ids_from(self.source.name, prefix)
            log.warning(
                "%s: version %d removed %s, which is gone already (vacuumed): the %d prompts stored from it are "
                "matched by origin (prompts it held that were stored from other files cannot be)",
                self.source.uri,
                file.version,
                file.path,
                len(rows),
            )
            keys += [ErasureKey(request_id=r) for r in rows if r not in kept_ids]
        return keys


def _span(commits: Sequence[DeltaCommit]) -> str:
    first, last = commits[0].version, commits[-1].version
    return str(first) if first == last else f"{first}-{last}"

"""A Delta table (a Databricks inference table) read as a table: version by version, through its log.

Each committed version after the last one ingested is read from the table's own log (`_delta_log/<v>.json`):

- files added with `dataChange: true` hold new rows (an append, or the rewritten rest of a DELETE, UPDATE or
  MERGE); files removed with `dataChange: true` held rows that may be gone. Which of those are gone (erased) is
  decided by the caller, which knows how a row is identified (its request id).
- when the commit wrote change data (`cdc` actions: the table has `delta.enableChangeDataFeed`), its change
  files say exactly which rows were inserted (`insert`, `update_postimage`) and which went (`delete`,
  `update_preimage`), and the add and remove actions are not read;
- a commit that changes no data (OPTIMIZE, a checkpoint, VACUUM, a property) is skipped: no data file is read;
- deletion vectors are honoured: the rows a file's vector marks are not its rows (deltalake decodes the vectors).

A first start reads the snapshot at the current version (or starts at `start_version`, or at the first version
committed at or after `start_timestamp`). Data files are read through deltalake's own storage layer, with the
table's storage options (an S3 endpoint, credentials from the AWS chain, a Unity Catalog's vended ones), so
every file read is counted in bytes. Rows become the same JSON payloads the S3 source makes of Parquet rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, partial
from typing import Any, Literal
from urllib.parse import unquote

from taoflow.connectors.errors import ConfigurationError, TemporaryError
from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.sources.parquet import jsonable, parquet_items

__all__ = ["DeltaCommit", "DeltaConfig", "DeltaFile", "DeltaSource"]

#: Change types of a change data file that are rows as they now are, and rows as they were.
INSERTED = frozenset({"insert", "update_postimage"})
REMOVED = frozenset({"delete", "update_preimage"})


@dataclass(frozen=True)
class DeltaConfig:
    table_uri: str  # s3://bucket/path/to/table, a local directory, or uc://catalog.schema.table
    endpoint_url: str | None = None  # S3-compatible endpoint (MinIO, ...)
    region: str | None = None
    storage_options: tuple[tuple[str, str], ...] = ()  # passed to deltalake as they are
    start_version: int | None = None  # first start: read the versions from this one on, not the snapshot
    start_timestamp: str | None = None  # first start: from the first version committed at or after this time


@dataclass(frozen=True)
class DeltaFile:
    """A data file to read rows from: added or removed by a version, or its change data."""

    path: str  # as the log writes it: relative to the table root (URL-encoded), or an absolute URI
    version: int
    change: Literal["add", "remove", "cdc"]
    size: int = 0
    partitions: tuple[tuple[str, str | None], ...] = ()
    deleted: frozenset[int] = frozenset()  # row positions its deletion vector marks

    @property
    def key(self) -> str:
        """The file's name in a source checkpoint: a data file's path never names other bytes."""
        return self.path

    @property
    def etag(self) -> str:
        return self.change


@dataclass
class DeltaCommit:
    """What one version changed, as files to read; nothing at all for a commit that changes no data."""

    version: int
    operation: str
    timestamp_ms: int = 0
    added: list[DeltaFile] = field(default_factory=list)  # adds with dataChange, or change data files
    removed: list[DeltaFile] = field(default_factory=list)  # removes with dataChange (not with change data)
    change_data: bool = False  # `added` are change data files: they carry their removed rows too

    @property
    def changes_data(self) -> bool:
        return bool(self.added or self.removed)


class DeltaSource:
    """Reads the versions of one Delta table, and the rows of their files."""

    def __init__(self, config: DeltaConfig, *, name: str = "delta") -> None:
        self.name = name
        self.config = config
        self.uri = config.table_uri.rstrip("/")
        self._loaded: Any = None

    # ------------------------------------------------------------------ versions
    def latest_version(self) -> int:
        """The table's newest version, its log read from where the last call left it."""
        table = self._table()
        try:
            table.update_incremental()
        except Exception as exc:  # deltalake raises its own and OSErrors for an unreachable store
            raise TemporaryError(f"cannot read the log of {self.uri}: {_said(exc)}") from None
        return int(table.version())

    def commits(self, versions: range) -> list[DeltaCommit]:
        """`commit` of each version, their log entries fetched concurrently (one request each on S3)."""
        if len(versions) <= 1:
            return [self.commit(v) for v in versions]
        with ThreadPoolExecutor(max_workers=min(8, len(versions)), thread_name_prefix="delta-log") as pool:
            return list(pool.map(self.commit, versions))

    def start_after(self) -> int | None:
        """The version a first start reads after: None for the snapshot."""
        if self.config.start_version is not None:
            return self.config.start_version - 1
        if self.config.start_timestamp is None:
            return None
        try:
            since = datetime.fromisoformat(self.config.start_timestamp.replace("Z", "+00:00")).timestamp() * 1000
        except ValueError:
            raise ConfigurationError(
                f"source.delta.start_timestamp {self.config.start_timestamp!r} is not an ISO 8601 time"
            ) from None
        versions = sorted((int(h["version"]), int(h["timestamp"])) for h in self._table().history())
        later = [version for version, at in versions if at >= since]
        return (later[0] if later else versions[-1][0] + 1) - 1

    def columns(self) -> list[str]:
        return [f.name for f in self._table().schema().fields]

    def snapshot(self, version: int) -> DeltaCommit:
        """The live files at `version`, as one commit that adds them all."""
        import pyarrow as pa

        table = self._table(version)
        partitions = list(table.metadata().partition_columns)
        actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
        deleted = self._deleted_rows(table) if self._has_deletion_vectors(table) else {}
        commit = DeltaCommit(version, "snapshot")
        for action in actions:
            path = str(action["path"])
            commit.added.append(
                DeltaFile(
                    path=path,
                    version=version,
                    change="add",
                    size=int(action.get("size_bytes") or 0),
                    partitions=tuple((p, _str(action.get(f"partition.{p}"))) for p in partitions),
                    deleted=deleted.get(self._absolute(path), frozenset()),
                )
            )
        return commit

    def commit(self, version: int) -> DeltaCommit:
        """What `version` changed, from its log entry."""
        actions = self._log(version)
        info: dict[str, Any] = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        commit = DeltaCommit(version, str(info.get("operation", "unknown")), int(info.get("timestamp") or 0))
        cdc = [a["cdc"] for a in actions if "cdc" in a]
        if cdc:
            commit.change_data = True
            commit.added = [self._file(c, version, "cdc") for c in cdc]
            return commit
        added = [a["add"] for a in actions if "add" in a and a["add"].get("dataChange", True)]
        removed = [a["remove"] for a in actions if "remove" in a and a["remove"].get("dataChange", True)]
        vectors_now = self._deleted_rows(self._table(version)) if _any_vector(added) else {}
        vectors_before = self._deleted_rows(self._table(version - 1)) if _any_vector(removed) else {}
        commit.added = [self._file(a, version, "add", vectors_now) for a in added]
        commit.removed = [self._file(r, version, "remove", vectors_before) for r in removed]
        return commit

    # ------------------------------------------------------------------ rows
    def fetch(self, ref: DeltaFile) -> bytes | None:
        """The file's bytes; None when it is gone (vacuumed: its rows are in later files, or erased)."""
        where = f"{self.uri}/{ref.path}"
        try:
            with self._fs.open_input_file(self._relative(ref.path)) as handle:
                return bytes(handle.read())
        except FileNotFoundError:
            return None
        except OSError as exc:
            if "not found" in str(exc).lower():
                return None
            raise TemporaryError(f"cannot read {where}: {_said(exc)}") from None

    def records(self, ref: DeltaFile, body: bytes) -> Iterator[SourceItem]:
        """The rows the file holds now: those its deletion vector keeps; of a change data file, the inserted
        ones. A row's origin is `<table>/<file>:<row>`, the same in every version that reads it."""
        return (item for item, change in self.rows(ref, body) if change in INSERTED)

    def rows(self, ref: DeltaFile, body: bytes) -> Iterator[tuple[SourceItem, str]]:
        """Every row of the file with its change: `insert` for an added file's, `delete` for a removed one's, the
        change type of a change data file's."""
        where = f"{self.uri}/{ref.path}"
        default = "delete" if ref.change == "remove" else "insert"
        for item, change in parquet_items(body, where, extra=dict(ref.partitions), deleted=ref.deleted):
            yield item, change or default

    def live_rows(self) -> Iterator[SourceItem]:
        """Every live row of the table as it is now (deletion vectors applied), streamed."""
        import pyarrow as pa

        for batch in pa.RecordBatchReader.from_stream(self._table().scan()):
            for row in batch.to_pylist():
                yield SourceItem(payload=json.dumps(row, default=jsonable).encode(), origin=f"{self.uri}@live")

    worker_modules = (__name__, "deltalake", "pyarrow.parquet")

    @property
    def factory(self) -> partial[DeltaSource]:
        """Builds an equal source in a worker process; picklable."""
        return partial(DeltaSource, self.config, name=self.name)

    # ------------------------------------------------------------------ access
    def _table(self, version: int | None = None) -> Any:
        """The table at `version`; without one, the table this source keeps (loaded once: later polls read only
        the log entries after it, `latest_version`)."""
        if version is None:
            if self._loaded is None:
                self._loaded = self._load(None)
            return self._loaded
        return self._load(version)

    def _load(self, version: int | None) -> Any:
        from deltalake import DeltaTable
        from deltalake.exceptions import DeltaError, TableNotFoundError

        try:
            return DeltaTable(self.uri, version=version, storage_options=self.storage_options())
        except TableNotFoundError:
            raise ConfigurationError(f"no Delta table at {self.uri}: check source.delta.table_uri") from None
        except (DeltaError, OSError) as exc:
            raise TemporaryError(f"cannot read the Delta table {self.uri}: {_said(exc)}") from None

    def storage_options(self) -> dict[str, str]:
        options = dict(self.config.storage_options)
        if self.config.endpoint_url:
            options.setdefault("AWS_ENDPOINT_URL", self.config.endpoint_url)
            options.setdefault("AWS_ALLOW_HTTP", str(self.config.endpoint_url.startswith("http://")).lower())
        if self.config.region:
            options.setdefault("AWS_REGION", self.config.region)
        return options

    @cached_property
    def _fs(self) -> Any:
        """The table's own storage (deltalake's): local disk, S3 with the endpoint, a catalog's credentials."""
        import pyarrow.fs as pafs
        from deltalake.fs import DeltaStorageHandler

        handler = DeltaStorageHandler.from_table(self._table()._table, self.storage_options())
        return pafs.PyFileSystem(handler)

    def _relative(self, path: str) -> str:
        path = unquote(path)
        if "://" in path:  # an absolute path (a shallow clone's files)
            root = self._table().table_uri.rstrip("/") + "/"
            if not path.startswith(root):
                raise ConfigurationError(f"{self.uri} names a data file outside the table: {path[:200]}")
            path = path[len(root) :]
        return path

    def _absolute(self, path: str) -> str:
        return path if "://" in path else f"{self._table().table_uri.rstrip('/')}/{path}"

    def _log(self, version: int) -> list[dict[str, Any]]:
        name = f"_delta_log/{version:020d}.json"
        try:
            with self._fs.open_input_stream(name) as handle:
                text = handle.read().decode("utf-8")
        except (FileNotFoundError, OSError) as exc:
            if isinstance(exc, FileNotFoundError) or "not found" in str(exc).lower():
                raise ConfigurationError(
                    f"version {version} of {self.uri} is no longer in its log (cleaned up after its retention): "
                    "restart from the current snapshot (`taoflow ingest --reset-source`) or set "
                    "source.delta.start_version"
                ) from None
            raise TemporaryError(f"cannot read the log of {self.uri}: {_said(exc)}") from None
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _file(
        self, action: Mapping[str, Any], version: int, change: Literal["add", "remove", "cdc"], vectors: Any = None
    ) -> DeltaFile:
        path = str(action["path"])
        deleted: frozenset[int] = frozenset()
        if action.get("deletionVector") and vectors is not None:
            deleted = vectors.get(self._absolute(path), frozenset())
        return DeltaFile(
            path=path,
            version=version,
            change=change,
            size=int(action.get("size") or 0),
            partitions=tuple((k, _str(v)) for k, v in (action.get("partitionValues") or {}).items()),
            deleted=deleted,
        )

    @staticmethod
    def _has_deletion_vectors(table: Any) -> bool:
        return "deletionVectors" in (table.protocol().reader_features or [])

    def _deleted_rows(self, table: Any) -> dict[str, frozenset[int]]:
        """Per data file (its absolute URI), the row positions its deletion vector marks (deltalake decodes)."""
        import pyarrow as pa

        out: dict[str, frozenset[int]] = {}
        for row in pa.table(table.deletion_vectors()).to_pylist():
            marked = frozenset(i for i, keep in enumerate(row["selection_vector"]) if not keep)
            out[unquote(str(row["filepath"]))] = marked
        return {**out, **{k.replace("file://", "", 1): v for k, v in out.items() if k.startswith("file://")}}


def _said(exc: Exception) -> str:
    """deltalake's message on one line: its colours and tree layout gone, at most 500 characters."""
    text = re.sub(r"\x1b\[[0-9;]*m|↳", " ", str(exc))
    return " ".join(text.split())[:500]


def _any_vector(actions: list[dict[str, Any]]) -> bool:
    return any(a.get("deletionVector") for a in actions)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)

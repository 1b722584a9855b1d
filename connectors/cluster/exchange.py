"""The exchange: where one round's files travel between the daemon's side and the cluster.

A folder per round (`<exchange_uri>/<model>/r<id>-<started>/`): `inputs/` the daemon's side writes (the spec,
prompts and held-out prompts as Parquet, the champion adapter's files), `outputs/` the job writes (candidates
and scores as Parquet, the adapter, the evaluations, a `done` file per stage). Rows are JSON strings in
Parquet columns, never pickled objects. S3 (any S3-compatible endpoint) or a path both sides mount, through
pyarrow's file systems; S3 credentials come from each side's own AWS chain.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from taoflow.connectors.errors import ArtifactError, ConfigurationError, TemporaryError

__all__ = ["Exchange"]

#: Most bytes read from one JSON file of the exchange (a hostile or broken writer cannot exhaust memory).
_MAX_JSON_BYTES = 64 << 20
#: Most bytes of one file of a folder copied from the exchange (an adapter's weights), streamed to disk.
_MAX_FILE_BYTES = 4 << 30


class Exchange:
    """One round's folder on the exchange."""

    def __init__(self, uri: str, *, endpoint_url: str | None = None, region: str | None = None) -> None:
        from pyarrow import fs

        self.uri = uri.rstrip("/")
        self.endpoint_url = endpoint_url
        self.region = region
        if self.uri.startswith("s3://"):
            options: dict[str, Any] = {"region": region or "us-east-1"}
            if endpoint_url:
                parsed = urlparse(endpoint_url)
                options["endpoint_override"] = parsed.netloc
                options["scheme"] = parsed.scheme or "https"
            self.fs: Any = fs.S3FileSystem(**options)
            self.root = self.uri.removeprefix("s3://")
        elif self.uri.startswith("/"):
            self.fs = fs.LocalFileSystem()
            self.root = self.uri
        else:
            raise ConfigurationError(f"exchange {uri!r} is neither s3://bucket/prefix nor an absolute path")

    def child(self, *parts: str) -> Exchange:
        """The folder below this one (`parts` are taoflow's own names, never a log's bytes)."""
        for part in parts:
            if not part or part in (".", "..") or "/" in part:
                raise ValueError(f"not a folder name: {part!r}")
        return Exchange(posixpath.join(self.uri, *parts), endpoint_url=self.endpoint_url, region=self.region)

    def path(self, name: str) -> str:
        """`name` below this folder, as the file system (and Ray Data's `filesystem=`) names it."""
        return posixpath.join(self.root, name)

    # ------------------------------------------------------------------ files
    def exists(self, name: str) -> bool:
        from pyarrow import fs

        return bool(self._call(lambda: self.fs.get_file_info(self.path(name)).type != fs.FileType.NotFound))

    def remove(self, name: str) -> None:
        """The file or folder `name`, if there is one (what an interrupted attempt left half written)."""
        from pyarrow import fs

        info = self._call(lambda: self.fs.get_file_info(self.path(name)))
        if info.type == fs.FileType.Directory:
            self._call(lambda: self.fs.delete_dir(self.path(name)))
        elif info.type == fs.FileType.File:
            self._call(lambda: self.fs.delete_file(self.path(name)))

    def remove_all(self) -> None:
        """This folder and everything in it (a round's, once its outputs are home)."""
        from pyarrow import fs

        info = self._call(lambda: self.fs.get_file_info(self.root))
        if info.type == fs.FileType.Directory:
            self._call(lambda: self.fs.delete_dir(self.root))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Whole or not at all: S3 puts are atomic; on a shared folder the file is renamed into place."""
        target = self.path(name)
        self._call(lambda: self.fs.create_dir(posixpath.dirname(target), recursive=True))
        if self.uri.startswith("s3://"):
            self._call(lambda: _write(self.fs, target, data))
        else:
            self._call(lambda: _write(self.fs, target + ".tmp", data))
            self._call(lambda: self.fs.move(target + ".tmp", target))

    def read_bytes(self, name: str, *, limit: int = _MAX_JSON_BYTES) -> bytes:
        def read() -> bytes:
            self._plain_file(name)
            with self.fs.open_input_stream(self.path(name)) as stream:
                data: bytes = stream.read(limit + 1)
            return data

        data: bytes = self._call(read)
        if len(data) > limit:
            raise TemporaryError(f"{self.uri}/{name} is larger than {limit} bytes: not read")
        return data

    def write_json(self, name: str, value: Any) -> None:
        self.write_bytes(name, json.dumps(value, sort_keys=True, default=str).encode())

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_bytes(name))

    def put_dir(self, name: str, directory: Path) -> None:
        """The plain files of `directory` (an adapter: flat) under `name/`."""
        for path in sorted(p for p in directory.iterdir() if p.is_file() and not p.is_symlink()):
            self.write_bytes(f"{name}/{path.name}", path.read_bytes())

    def get_dir(self, name: str, directory: Path, *, limit: int = _MAX_FILE_BYTES) -> Path:
        """The files under `name/` into `directory` (created), each streamed to disk and at most `limit` bytes; a
        name that is not a plain file name is skipped, a link on a shared folder refused."""
        from pyarrow import fs

        directory.mkdir(parents=True, exist_ok=True)
        infos = self._call(lambda: self.fs.get_file_info(fs.FileSelector(self.path(name), recursive=False)))
        for info in infos:
            base = posixpath.basename(info.path)
            if info.type != fs.FileType.File or base in ("", ".", "..") or base.startswith("."):
                continue
            self._call(lambda base=base: self._copy(f"{name}/{base}", directory / base, limit))
        return directory

    def _copy(self, name: str, target: Path, limit: int) -> None:
        self._plain_file(name)
        copied = 0
        with self.fs.open_input_stream(self.path(name)) as stream, target.open("wb") as out:
            while chunk := stream.read(1 << 20):
                copied += len(chunk)
                if copied > limit:
                    raise TemporaryError(f"{self.uri}/{name} is larger than {limit} bytes: not copied")
                out.write(chunk)

    def _plain_file(self, name: str) -> None:
        """On a shared folder, `name` must be a regular file inside this folder, reached through no link: a job
        (or whoever else can write the folder) must not make the daemon read one of its own files."""
        if self.uri.startswith("s3://"):
            return
        path = self.path(name)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise TemporaryError(f"the round exchange {self.uri} failed: {exc}") from None
        inside = os.path.realpath(path).startswith(os.path.realpath(self.root) + os.sep)
        if not stat.S_ISREG(mode) or not inside:
            raise ArtifactError(f"{self.uri}/{name} is a link or not a regular file: refused")

    # ------------------------------------------------------------------ tables
    def write_rows(self, name: str, rows: Sequence[dict[str, Any]], columns: dict[str, str]) -> None:
        """Rows as one Parquet file; `columns` maps each column to `string` or `int64` (explicit Arrow types)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = pa.schema([(c, pa.string() if t == "string" else pa.int64()) for c, t in columns.items()])
        table = pa.Table.from_pylist(list(rows), schema=schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.write_bytes(name, sink.getvalue().to_pybytes())

    def read_table(self, name: str) -> Any:
        """A Parquet file, or a folder of them, as one Arrow table."""
        import pyarrow.dataset as ds

        return self._call(lambda: ds.dataset(self.path(name), filesystem=self.fs, format="parquet").to_table())

    @contextlib.contextmanager
    def output_stream(self, name: str) -> Iterator[Any]:
        """A stream writing `name` (on S3 a multipart upload, completed when the block ends without error)."""
        target = self.path(name)
        self._call(lambda: self.fs.create_dir(posixpath.dirname(target), recursive=True))
        stream = self._call(lambda: self.fs.open_output_stream(target))
        try:
            yield stream
        finally:
            stream.close()

    def read_rows(self, name: str) -> Iterator[dict[str, Any]]:
        """The rows of a Parquet file or of a folder of them (what Ray Data writes), batch by batch."""
        import pyarrow.dataset as ds

        dataset = self._call(lambda: ds.dataset(self.path(name), filesystem=self.fs, format="parquet"))
        for batch in dataset.to_batches():
            yield from batch.to_pylist()

    def _call(self, operation: Any) -> Any:
        try:
            return operation()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise TemporaryError(f"the round exchange {self.uri} failed: {exc}") from None


def _write(filesystem: Any, path: str, data: bytes) -> None:
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)

"""An S3 inference-table source: new objects under a bucket/prefix, read once each.

Objects are JSON lines (`.jsonl`, `.json`, `.ndjson`), gzipped JSON lines (`.gz`) or
Parquet (`.parquet`). A Delta table's own files (`_delta_log/`, `_change_data/`) are never records: a
prefix that holds a Delta table is read as a table by the delta source (connectors/sources/delta.py),
which knows which data files are live. Each object is identified by key and ETag; the caller records an
object as ingested only after its records are stored, so a restart re-reads at most the object it was in.
Every record's origin names its object, ETag and row, which the buffer dedups on.
Credentials come from the standard AWS chain; `endpoint_url` points at MinIO or any
other S3-compatible store.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from taoflow.connectors.errors import ConfigurationError, TaoflowError, TemporaryError
from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.sources.parquet import parquet_items

__all__ = ["ObjectRef", "S3Config", "S3Source", "object_records"]

log = logging.getLogger(__name__)

_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".gz", ".parquet")


@dataclass(frozen=True)
class S3Config:
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    order: Literal["key", "last_modified"] = "key"


@dataclass(frozen=True)
class ObjectRef:
    key: str
    etag: str
    size: int
    last_modified: float


class S3Source:
    """Lists and reads the objects of one bucket/prefix."""

    def __init__(self, config: S3Config, *, name: str = "s3", client: Any = None) -> None:
        import boto3

        self.name = name
        self.config = config
        self._s3 = client or boto3.client("s3", endpoint_url=config.endpoint_url, region_name=config.region)
        self._warned_delta = False

    def _warn_delta(self, key: str) -> None:
        root = key.split("/_delta_log/")[0] if "/_delta_log/" in key else key.split("/_change_data/")[0]
        log.warning(
            "s3://%s/%s is a Delta table: its log (_delta_log/) and change data are not read as records, but "
            "every data file is, whether the table still holds it or not (deleted rows, compaction's copies); "
            "read it as a table with source.kind: delta (source.delta.table_uri: s3://%s/%s)",
            self.config.bucket,
            root,
            self.config.bucket,
            root,
        )
        self._warned_delta = True

    def pending(self, done: Collection[tuple[str, str]]) -> list[ObjectRef]:
        """Objects not yet ingested (by key and ETag), in the configured order."""
        from botocore.exceptions import BotoCoreError, ClientError

        found: list[ObjectRef] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.config.bucket, Prefix=self.config.prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    ref = ObjectRef(
                        key=item["Key"],
                        etag=item["ETag"].strip('"'),
                        size=int(item["Size"]),
                        last_modified=item["LastModified"].timestamp(),
                    )
                    if (ref.key, ref.etag) not in done:
                        found.append(ref)  # other types too: each is counted as skipped, once
                    if not self._warned_delta and _delta_internal(ref.key):
                        self._warn_delta(ref.key)
        except (BotoCoreError, ClientError) as exc:
            raise _listing_error(f"s3://{self.config.bucket}/{self.config.prefix}", exc) from None
        if self.config.order == "last_modified":
            return sorted(found, key=lambda r: (r.last_modified, r.key))
        return sorted(found, key=lambda r: r.key)

    def fetch(self, ref: ObjectRef) -> bytes | None:
        """The object's bytes; None when it was replaced or deleted since listing (the next listing has it)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if not ref.key.endswith(_SUFFIXES) or _delta_internal(ref.key):
            return b""  # not downloaded: it is counted as skipped (see object_records)
        where = f"s3://{self.config.bucket}/{ref.key}#{ref.etag}"
        try:
            body: bytes = self._s3.get_object(Bucket=self.config.bucket, Key=ref.key, IfMatch=ref.etag)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "NoSuchKey", "412", "404"):
                return None
            raise TemporaryError(f"cannot read {where}: {exc}") from None
        except BotoCoreError as exc:
            raise TemporaryError(f"cannot read {where}: {exc}") from None
        return body

    def records(self, ref: ObjectRef, body: bytes) -> Iterator[SourceItem]:
        """The object's records; a part that cannot be decoded becomes one item with `error` set."""
        return object_records(self.config.bucket, ref, body)

    worker_modules = (__name__, "boto3", "botocore.client")

    @property
    def factory(self) -> Callable[[], S3Source]:
        """Builds an equal source (with its own client) in a worker process; picklable."""
        return partial(S3Source, self.config, name=self.name)


#: Client errors that waiting will not fix: the message says what to change.
_PERMANENT = {
    "NoSuchBucket": "the bucket does not exist: check source.s3.bucket (and source.s3.endpoint_url)",
    "AccessDenied": "access denied: the credentials in use may not list this bucket and prefix",
    "AllAccessDisabled": "access denied: all access to this bucket is disabled",
    "InvalidAccessKeyId": "the access key id is unknown to this endpoint: check the credentials",
    "SignatureDoesNotMatch": "the secret key does not match the access key id: check the credentials",
}


def _listing_error(where: str, exc: Exception) -> TaoflowError:
    """A permanent ConfigurationError when settings or credentials are wrong, else a TemporaryError (an outage)."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return ConfigurationError(
            f"cannot list {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(from a secret), AWS_PROFILE, or give the pod an IAM role (IRSA / workload identity)"
        )
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _PERMANENT:
            return ConfigurationError(f"cannot list {where}: {_PERMANENT[code]} ({code})")
    return TemporaryError(f"cannot list {where}: {exc}")


def object_records(bucket: str, ref: ObjectRef, body: bytes) -> Iterator[SourceItem]:
    """The records of one object of `bucket`, by its key's suffix; another type is one skipped item."""
    where = f"s3://{bucket}/{ref.key}#{ref.etag}"
    if _delta_internal(ref.key):
        yield SourceItem(payload=b"", origin=where, skip="delta_log")
    elif not ref.key.endswith(_SUFFIXES):
        yield SourceItem(payload=b"", origin=where, skip="unsupported_object")
    elif not body:
        yield SourceItem(payload=b"", origin=f"{where}:0", error="empty_object: the object has no bytes")
    elif ref.key.endswith(".parquet"):
        yield from _parquet_rows(body, where)
    elif ref.key.endswith(".gz"):
        yield from _gzip_lines(body, where)
    else:
        yield from _lines(body, where)


def _delta_internal(key: str) -> bool:
    """A Delta table's own files: its log (commits, checkpoints) and change data are not inference records."""
    return any(part in ("_delta_log", "_change_data") for part in key.split("/")[:-1])


def _lines(body: bytes, where: str) -> Iterator[SourceItem]:
    for number, line in enumerate(body.splitlines(), start=1):
        if line.strip():
            yield SourceItem(payload=line, origin=f"{where}:{number}")


def _gzip_lines(body: bytes, where: str) -> Iterator[SourceItem]:
    # zlib rather than gzip.decompress: it returns what a truncated stream holds and says it ended early.
    decompressor = zlib.decompressobj(wbits=31)
    try:
        data = decompressor.decompress(body)
        complete = decompressor.eof
    except zlib.error as exc:
        yield SourceItem(payload=body[:4096], origin=f"{where}:0", error=f"invalid_gzip: {exc}")
        return
    lines = data.splitlines()
    if not complete and lines and not data.endswith(b"\n"):
        lines = lines[:-1]  # the last line of a truncated stream is cut mid-record
    yield from _lines(b"\n".join(lines), where)
    if not complete:
        yield SourceItem(payload=b"", origin=f"{where}:{len(lines) + 1}", error="truncated_gzip: stream ends early")


def _parquet_rows(body: bytes, where: str) -> Iterator[SourceItem]:
    return (item for item, _ in parquet_items(body, where))

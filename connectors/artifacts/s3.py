"""Adapter artifacts in S3 (or MinIO, Ceph): `s3://bucket/prefix/<version>/<file>`, cached locally.

`put` uploads every file, `adapter_config.json` last: a version exists once that object
does, so a crash mid-upload leaves no half version behind. `fetch` downloads into the
local cache through a temporary directory renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from taoflow.connectors.artifacts.local import check_adapter_dir, validate_version
from taoflow.connectors.errors import ArtifactError, TemporaryError

__all__ = ["S3ArtifactStore"]

_MARKER = "adapter_config.json"


class S3ArtifactStore:
    """An `ArtifactStore` over one bucket prefix, with a local cache directory for fetched versions."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        cache_dir: Path,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        import boto3

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.cache_dir = cache_dir.resolve()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._s3 = client or boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _key(self, version: str, name: str) -> str:
        """`prefix/version/name`; with an empty name, the version's "directory" (ends in /)."""
        return "/".join(p for p in (self.prefix, validate_version(version)) if p) + "/" + name

    def put(self, version: str, directory: Path) -> str:
        check_adapter_dir(directory)
        if self.exists(version):
            raise ArtifactError(
                f"adapter version {version} already exists in s3://{self.bucket}; versions are immutable"
            )
        files = sorted((p for p in directory.iterdir() if p.is_file()), key=lambda p: p.name == _MARKER)
        for path in files:
            if path.is_symlink():
                raise ArtifactError(f"refusing to store symlink {path} in an adapter artifact")
            self._call("upload", lambda p=path: self._s3.upload_file(str(p), self.bucket, self._key(version, p.name)))
        return self.uri(version)

    def uri(self, version: str) -> str:
        return f"s3://{self.bucket}/{self._key(version, '')}"

    def fetch(self, version: str) -> Path:
        target = self.cache_dir / validate_version(version)
        if target.is_dir():
            return target
        keys = self._call("list", lambda: self._keys(self._key(version, "")))
        if self._key(version, _MARKER) not in keys:
            raise ArtifactError(f"adapter version {version} is not in s3://{self.bucket}/{self.prefix}")
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.cache_dir))
        try:
            for key in keys:
                name = key.rsplit("/", 1)[-1]
                if not name or name.startswith(".") or "/" in key.removeprefix(self._key(version, "")):
                    continue  # only the version's own flat files
                self._call("download", lambda k=key, n=name: self._s3.download_file(self.bucket, k, str(staging / n)))
            check_adapter_dir(staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def exists(self, version: str) -> bool:
        """Whether the version's marker object is there: that exact key (not every key it is a prefix of)."""
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(version, _MARKER))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise TemporaryError(
                f"S3 artifact store lookup in s3://{self.bucket}/{self.prefix} failed: {exc}"
            ) from None
        return True

    def _keys(self, prefix: str) -> list[str]:
        """Every key under `prefix`, page after page (a listing returns at most 1000)."""
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def _call(self, what: str, call: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except (BotoCoreError, ClientError) as exc:
            raise TemporaryError(
                f"S3 artifact store {what} in s3://{self.bucket}/{self.prefix} failed: {exc}"
            ) from None

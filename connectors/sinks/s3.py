"""Captured exchanges as gzipped JSON-lines objects in the S3 source's bucket and prefix.

One object per batch, named by the batch's spool sequence numbers, so the S3 source reads each new
object once and a batch sent again after a crash is at worst a second object (the buffer keeps one
row per request id).
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Sequence
from typing import Any

from taoflow.connectors.errors import TemporaryError
from taoflow.connectors.sinks.base import Captured

__all__ = ["S3Sink"]


class S3Sink:
    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        gateway: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.gateway = gateway
        self._s3 = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2}),
        )

    def key(self, records: Sequence[Captured]) -> str:
        day = time.strftime("%Y-%m-%d", time.gmtime(records[0].at))
        name = f"date={day}/capture-{self.gateway}-{records[0].seq:012d}-{records[-1].seq:012d}.jsonl.gz"
        return f"{self.prefix}/{name}" if self.prefix else name

    def send(self, records: Sequence[Captured]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        body = gzip.compress(b"".join(r.value + b"\n" for r in records), compresslevel=5)
        try:
            self._s3.put_object(Bucket=self.bucket, Key=self.key(records), Body=body)
        except (BotoCoreError, ClientError) as exc:
            raise TemporaryError(f"cannot write to s3://{self.bucket}/{self.prefix}: {exc}") from None

    def close(self) -> None:
        self._s3.close()

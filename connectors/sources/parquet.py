"""Parquet rows as source items: one JSON payload per row, as the record parsers read them.

Inference tables (and any Delta table) store their rows in Parquet. A row becomes the JSON object of its
columns: timestamps as epoch milliseconds, bytes as text, map columns as key/value pairs (the Databricks
parser reads those). A change data file's `_change_type` is not part of the row: it is returned beside it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import orjson

from taoflow.connectors.protocols import SourceItem

__all__ = ["jsonable", "parquet_items"]

#: Columns a Delta change data file adds to the table's own.
_CHANGE_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")


def parquet_items(
    body: bytes,
    where: str,
    *,
    extra: Mapping[str, Any] | None = None,
    deleted: Collection[int] = (),
) -> Iterator[tuple[SourceItem, str | None]]:
    """Each row of a Parquet file (but those at the positions in `deleted`) as an item whose origin is
    `where:<row number>`, with its change type (None where the file has none). `extra` are columns the file
    does not hold (a Delta table's partition values). A file that cannot be read is one item with `error`."""
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(io.BytesIO(body))
        batches = reader.iter_batches(batch_size=4096)
        position = 0
        for batch in batches:
            for row in batch.to_pylist():
                position += 1
                if position - 1 in deleted:
                    continue
                change = row.pop("_change_type", None)
                for column in _CHANGE_COLUMNS[1:]:
                    row.pop(column, None)
                if extra:
                    for key, value in extra.items():
                        row.setdefault(key, value)
                payload = _dumps(row)
                yield SourceItem(payload=payload, origin=f"{where}:{position}"), change
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        yield SourceItem(payload=body[:4096], origin=f"{where}:0", error=f"invalid_parquet: {exc}"), None


def _dumps(row: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(row, default=jsonable, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # integers past 64 bits, and what else orjson refuses
        return json.dumps(row, default=jsonable).encode()


def jsonable(value: Any) -> Any:
    if hasattr(value, "timestamp"):
        return int(value.timestamp() * 1000)  # Delta timestamps -> epoch milliseconds, as the parser expects
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)

"""Delta tables shaped like Databricks inference tables, written with deltalake (the real writer) for tests and
benchmarks: appends, DELETE, MERGE, OPTIMIZE, checkpoints, VACUUM, schema evolution, the Change Data Feed."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

#: The columns of a (legacy model-serving) Databricks inference table.
SCHEMA = pa.schema(
    [
        ("databricks_request_id", pa.string()),
        ("client_request_id", pa.string()),
        ("timestamp_ms", pa.int64()),
        ("status_code", pa.int32()),
        ("execution_time_ms", pa.int64()),
        ("request", pa.string()),
        ("response", pa.string()),
        ("request_metadata", pa.map_(pa.string(), pa.string())),
    ]
)


def user_of(i: int) -> str:
    return f"user-{i % 60}"


def inference_rows(start: int, count: int, *, chars: int = 0) -> pa.Table:
    """Rows `req-<start>` .. `req-<start+count-1>`: a chat request, its logged answer, the endpoint and user
    in `request_metadata` (a map column)."""
    padding = " Please show the working." * (chars // 25)
    rows = [
        {
            "databricks_request_id": f"req-{i}",
            "client_request_id": None,
            "timestamp_ms": 1_790_000_000_000 + i,
            "status_code": 200,
            "execution_time_ms": 12,
            "request": json.dumps({"messages": [{"role": "user", "content": f"What is {i} + {i}?{padding}"}]}),
            "response": json.dumps({"choices": [{"message": {"role": "assistant", "content": str(2 * i)}}]}),
            "request_metadata": [("endpoint_name", "support"), ("user", user_of(i))],
        }
        for i in range(start, start + count)
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def append(uri: str, table: pa.Table, options: dict[str, str] | None = None, **kwargs: Any) -> None:
    from deltalake import write_deltalake

    write_deltalake(uri, table, mode="append", storage_options=options, **kwargs)


def scenario(uri: str, options: dict[str, str] | None = None, *, change_data_feed: bool = False) -> list[str]:
    """The issue's table: four appends of 50 rows, a DELETE of two users' rows (an erasure request), OPTIMIZE, a
    checkpoint. Returns the erased request ids."""
    from deltalake import DeltaTable

    configuration = {"delta.enableChangeDataFeed": "true"} if change_data_feed else None
    for k in range(4):
        append(uri, inference_rows(k * 50, 50), options, configuration=configuration if k == 0 else None)
    table = DeltaTable(uri, storage_options=options)
    table.delete("databricks_request_id IN ('req-7', 'req-120')")
    table.optimize.compact()
    table.create_checkpoint()
    return ["req-7", "req-120"]


def live_request_ids(uri: str, options: dict[str, str] | None = None) -> set[str]:
    from deltalake import DeltaTable

    table = DeltaTable(uri, storage_options=options).to_pyarrow_table(columns=["databricks_request_id"])
    return set(table.column("databricks_request_id").to_pylist())


# Deletion vectors: deltalake reads them but does not write them (its DELETE rewrites files), so a commit that
# deletes rows with one is written here as Databricks writes it (an inline vector: the Delta protocol's
# RoaringBitmapArray, Z85-encoded). deltalake's own reader is the check that it is a valid one.
_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def _z85(data: bytes) -> str:
    out = []
    for start in range(0, len(data), 4):
        value = struct.unpack(">I", data[start : start + 4])[0]
        chunk = []
        for _ in range(5):
            chunk.append(_Z85[value % 85])
            value //= 85
        out.extend(reversed(chunk))
    return "".join(out)


def _deletion_vector(rows: list[int]) -> bytes:
    """The serialised vector of row positions (fewer than 65536, an even count: Z85 takes 4-byte groups)."""
    assert len(rows) % 2 == 0 and max(rows) < 65536
    values = b"".join(struct.pack("<H", r) for r in sorted(rows))
    header = struct.pack("<II", 12346, 1) + struct.pack("<HH", 0, len(rows) - 1)  # one array container
    bitmap = header + struct.pack("<I", len(header) + 4) + values
    return struct.pack("<i", 1681511377) + struct.pack("<Q", 1) + struct.pack("<I", 0) + bitmap


def delete_with_deletion_vector(directory: str, rows: list[int]) -> None:
    """Commit a DELETE of the rows at `rows` of the table's first data file, as a deletion vector (local
    tables written with delta.enableDeletionVectors)."""
    log = Path(directory) / "_delta_log"
    commits = sorted(log.glob("*.json"))
    add = next(json.loads(line)["add"] for line in commits[0].read_text().splitlines() if '"add"' in line)
    data = _deletion_vector(rows)
    vector = {"storageType": "i", "pathOrInlineDv": _z85(data), "sizeInBytes": len(data), "cardinality": len(rows)}
    now = int(time.time() * 1000)
    actions = [
        {"commitInfo": {"timestamp": now, "operation": "DELETE", "operationParameters": {}}},
        {
            "remove": {
                "path": add["path"],
                "dataChange": True,
                "deletionTimestamp": now,
                "extendedFileMetadata": True,
                "partitionValues": add["partitionValues"],
                "size": add["size"],
            }
        },
        {"add": {**add, "dataChange": True, "modificationTime": now, "deletionVector": vector}},
    ]
    version = int(commits[-1].stem) + 1
    (log / f"{version:020d}.json").write_text("\n".join(json.dumps(a) for a in actions) + "\n")

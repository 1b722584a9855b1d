"""The buffer's own costs: the prompt hash's ASCII fast path, and the database page size.

    .venv/bin/python bench/buffer.py [--records 60000]

1. Folding a prompt for its hash: the ASCII fast path (`folded_text`) against the reference
   `" ".join(NFKC(text).casefold().split())`, on the same 1 KB prompts, in the same run.
2. Buffering 2.2 KB records through `PromptBuffer.add_rows` in batches of 1500: CPU seconds
   with 16 KiB pages (what new state files use) against 4 KiB pages (SQLite's default).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import timeit
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ingest import record  # a realistic 2.2 KB inference-log line
from taoflow.connectors.records import folded_text
from taoflow.connectors.sources.formats import parse_payload
from taoflow.daemon.store import storage
from taoflow.daemon.store.buffer import PromptBuffer, buffer_row


def reference(text: str) -> bytes:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split()).encode()


def buffering_cpu(rows: list, page_size: int) -> float:  # type: ignore[type-arg]
    storage._PAGE_SIZE = page_size  # read when a new file is created
    with tempfile.TemporaryDirectory() as tmp:
        db = storage.Database(Path(tmp) / "bench.db")
        assert db.query("PRAGMA page_size")[0][0] == page_size
        buffer = PromptBuffer(db, heldout_fraction=0.1, heldout_max_per_task=200)
        started = time.process_time()  # this process: the writer and the background checkpointer
        for start in range(0, len(rows), 1500):
            buffer.add_rows(rows[start : start + 1500], source="bench")
        used = time.process_time() - started
        db.close()
    return used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=60_000)
    args = parser.parse_args()
    records = [parse_payload(record(i)) for i in range(args.records)]
    prompts = [r.messages[0].content for r in records[:2000]]
    fast = min(timeit.repeat(lambda: [folded_text(p) for p in prompts], number=5, repeat=3)) / (5 * len(prompts))
    slow = min(timeit.repeat(lambda: [reference(p) for p in prompts], number=5, repeat=3)) / (5 * len(prompts))
    print(f"prompt folding: fast path {fast * 1e6:.2f} us vs reference {slow * 1e6:.2f} us per prompt", end=" ")
    print(f"(x{fast / slow:.2f})")
    rows = [buffer_row(r, f"bench:{i}") for i, r in enumerate(records)]
    chosen = storage._PAGE_SIZE
    large, small = buffering_cpu(rows, chosen), buffering_cpu(rows, 4096)
    storage._PAGE_SIZE = chosen
    print(f"buffering {len(rows)} records: {chosen // 1024} KiB pages {large:.2f} s CPU", end=" ")
    print(f"vs 4 KiB pages {small:.2f} s (x{large / small:.2f})")


if __name__ == "__main__":
    main()

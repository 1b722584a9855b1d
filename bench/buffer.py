"""The buffer's own costs: the prompt hash's ASCII fast path, the database page size, and what a round and a
scrape cost as the buffer grows.

    .venv/bin/python -m bench.buffer [--records 60000] [--held 10000,100000,1000000] [--steady 200]

1. Folding a prompt for its hash: the ASCII fast path (`folded_text`) against the reference
   `" ".join(NFKC(text).casefold().split())`, on the same 1 KB prompts, in the same run.
2. Buffering 2.2 KB records through `PromptBuffer.add_rows` in batches of 1500: CPU seconds
   with 16 KiB pages (what new state files use) against 4 KiB pages (SQLite's default).
3. With `--held`: for each size, a buffer holding that many untrained 2.2 KB prompts over four tasks; the
   database size, `stats()` (every policy tick and scrape; median of 5), `training_prompts(256)` (every round;
   median of 3) and the peak RSS growth while it runs. The smallest size is the reference for the ratios.
4. With `--steady`: a steady stream (2000 new 2.2 KB prompts per cycle into a buffer capped at 10000 with
   evict_oldest, a round consuming 500 each cycle, 100 dead letters per cycle) for that many cycles, with
   retention on (consumed prompts retired after 1 s, dead letters capped at 5000; applied every cycle) against
   the same stream with it off: the database file's size at the end.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import threading
import time
import timeit
import unicodedata
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.lib import cli
from bench.lib.records import record  # a realistic 2.2 KB inference-log line
from taoflow.connectors.records import folded_text
from taoflow.connectors.sources.formats import parse_payload
from taoflow.daemon.store import storage
from taoflow.daemon.store.buffer import DeadRow, PromptBuffer, buffer_row
from taoflow.daemon.store.retention import RetentionPolicy, apply_retention
from taoflow.daemon.store.rounds import RoundStore


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


def synthetic_rows(start: int, count: int, template: str) -> list:  # type: ignore[type-arg]
    """2.2 KB records like bench/ingest.py's, made without parsing (a million parses would dominate the bench)."""
    rows = []
    for i in range(start, start + count):
        digest = hashlib.sha256(str(i).encode()).hexdigest()
        rows.append((f"req-{i}", digest, f"bench:{i}", f"task-{i % 4}", template.replace("@ID@", str(i))))
    return rows


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def peak_growth(call: Callable[[], object]) -> tuple[float, float]:
    """(seconds, peak RSS growth in MiB) of one call, RSS sampled every 5 ms from a thread."""
    before, peak, done = rss_mib(), [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], rss_mib() - before)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    return seconds, max(peak[0], rss_mib() - before)


def scale(sizes: list[int]) -> None:
    base = parse_payload(record(0))
    template = base.to_json().replace(base.request_id, "req-@ID@", 1).replace("ticket", "ticket @ID@", 1)
    print(f"{'held':>9} {'DB MiB':>8} {'stats() ms':>11} {'training_prompts(256) s':>24} {'its peak RSS MiB':>17}")
    reference: tuple[float, float] | None = None
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            db = storage.Database(Path(tmp) / "held.db")
            buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0)
            for start in range(0, size, 5000):
                buffer.add_rows(synthetic_rows(start, min(5000, size - start), template), source="bench")
            checkpointed(db)
            megabytes = (Path(tmp) / "held.db").stat().st_size / 2**20
            stats_s = statistics.median(timeit.repeat(buffer.stats, number=1, repeat=5))
            runs = [peak_growth(partial(buffer.training_prompts, 256)) for _ in range(3)]
            select_s, growth = statistics.median(r[0] for r in runs), max(r[1] for r in runs)
            db.close()
        reference = reference or (stats_s, select_s)
        print(
            f"{size:9d} {megabytes:8.0f} {stats_s * 1e3:7.3f} (x{stats_s / reference[0]:4.1f})"
            f" {select_s:12.4f} (x{select_s / reference[1]:6.1f}) {growth:15.0f}"
        )


def checkpointed(db: storage.Database) -> None:
    """The file's size is measured after a completed checkpoint, or not at all."""
    if not db.checkpoint():
        raise RuntimeError("the WAL checkpoint did not complete: the file size would be wrong")


def steady(cycles: int, *, retention: bool) -> tuple[float, int]:
    """(database MiB at the end, prompt rows held) after `cycles` of a steady stream."""
    base = parse_payload(record(0))
    template = base.to_json().replace(base.request_id, "req-@ID@", 1).replace("ticket", "ticket @ID@", 1)
    policy = RetentionPolicy(consumed_text_days=1 / 86400, dead_letter_days=None, dead_letter_max=5000)
    with tempfile.TemporaryDirectory() as tmp:
        db = storage.Database(Path(tmp) / "steady.db")
        buffer = PromptBuffer(db, heldout_fraction=0.0, heldout_max_per_task=0, cap=10_000, overflow="evict_oldest")
        rounds = RoundStore(db, Path(tmp) / "rounds")
        for cycle in range(cycles):
            dead = [DeadRow(f"c{cycle}-{i}", "invalid_json", "", b"{" * 512) for i in range(100)]
            buffer.add_rows(synthetic_rows(cycle * 2000, 2000, template), source="bench", dead=dead)
            done = rounds.fail(rounds.start("bench").id, "a round's worth consumed")
            buffer.mark_consumed([p.id for p in buffer.training_prompts(500)], done.id)
            if retention:
                time.sleep(0.01)
                apply_retention(db, policy, now=time.time() + 1.0)
        checkpointed(db)
        size = db.size() / 2**20
        rows = int(db.query("SELECT count(*) FROM prompts")[0][0])
        db.close()
    return size, rows


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--records", type=int, default=60_000)
    parser.add_argument("--held", help="comma-separated buffer sizes for the per-round and per-scrape costs")
    parser.add_argument("--steady", type=int, help="cycles of a steady stream, retention on against off")
    args = cli.parse(parser, argv, smoke={"records": 2000, "held": "500,1000", "steady": 2})
    if args.held:
        scale([int(n) for n in args.held.split(",")])
    if args.steady:
        (off, off_rows), (on, on_rows) = steady(args.steady, retention=False), steady(args.steady, retention=True)
        print(f"steady stream of {args.steady} cycles ({args.steady * 2000} prompts in, {args.steady * 500} consumed):")
        print(f"  retention off: {off:.0f} MiB ({off_rows} prompt rows)")
        print(f"  retention on:  {on:.0f} MiB ({on_rows} prompt rows), x{on / off:.2f}")
    if (args.held or args.steady) and not args.smoke:
        return
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

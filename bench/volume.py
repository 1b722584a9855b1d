"""A burst of traffic through a real Kafka-protocol broker (tansu) into a capped buffer while rounds consume.

    .venv/bin/python -m bench.volume [--messages 1000000] [--cap 10000]

Small records (~150 B) produced at full speed over two partitions, four tasks (one with 70 % of the traffic);
the buffer has `--cap` places and `ingest.overflow: evict_oldest`; a stand-in for rounds marks 256 prompts
consumed every second while the producer runs. Printed: whether the consumer ever paused, how long it took to
read everything (and the rate), what the buffer holds per task, how old its newest prompt is, and the accounting
read = held + duplicates + evicted. The reference is the producer's own rate in the same run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.lib import cli
from tests.support.brokers import tansu_broker
from tests.support.volume import run


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--cap", type=int, default=10_000)
    args = cli.parse(parser, argv, smoke={"messages": 3000, "cap": 1000})
    with tansu_broker() as bootstrap, tempfile.TemporaryDirectory() as work:
        result = run(bootstrap, Path(work), messages=args.messages, cap=args.cap)
    report = result.report
    print(f"{result.messages} messages, buffer cap {args.cap} (evict_oldest), {result.rounds} rounds of 256 meanwhile")
    print(f"consumer ever paused: {result.ever_paused}")
    produced, read = result.messages / result.produced_s, result.messages / result.caught_up_s
    print(
        f"produced in {result.produced_s:.1f} s ({produced:.0f}/s); everything read and buffered after "
        f"{result.caught_up_s:.1f} s ({read:.0f}/s, x{read / produced:.2f} of the producer's rate)"
    )
    print(f"untrained per task: {result.new_per_task} (sum {sum(result.new_per_task.values())} <= {args.cap})")
    print(f"newest untrained prompt: {result.newest_age_s:.1f} s old when the burst had been read")
    balanced = report.read == result.held + report.duplicates + result.evicted
    print(
        f"read {report.read} = held {result.held} (consumed {result.consumed}) + duplicates {report.duplicates}"
        f" + evicted {result.evicted}: {'exact' if balanced else 'MISMATCH'}"
    )


if __name__ == "__main__":
    main()

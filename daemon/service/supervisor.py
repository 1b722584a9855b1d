"""One supervisor owns the daemon's named tasks: it starts them, restarts a failed one with
backoff, and stops all of them together.

A task is a function of a stop event that runs until the event is set. If it raises (or
returns while the daemon is not stopping), it is restarted after `backoff_s`, doubled for
each failure within `window_s`; more than `max_restarts` failures in that window stop the
daemon with a clear reason and exit status 1.

A `TemporaryError` (a broker or a bucket that does not answer) is an outage, not a failure:
the task is retried after the error's `delay`, doubled per attempt up to `max_retry_s`, for as
long as it takes, with one log line per attempt and no traceback. Until the task reports
itself `recovered` it counts as not running, so /readyz says not ready. `stop()` (SIGTERM)
sets the event and waits for every task to return: sources stop fetching and commit, the
scheduler stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from taoflow.connectors.errors import TemporaryError

__all__ = ["Supervisor", "TaskFailed"]

log = logging.getLogger(__name__)

Task = Callable[[threading.Event], None]


class TaskFailed(Exception):
    """A supervised task failed more often than its restart budget allows."""


@dataclass
class _Running:
    name: str
    target: Task
    thread: threading.Thread | None = None
    error: BaseException | None = None
    failures: list[float] = field(default_factory=list)
    outage_attempts: int = 0  # consecutive temporary errors; 0 once the task reports it works
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        *,
        max_restarts: int = 5,
        window_s: float = 300.0,
        backoff_s: float = 1.0,
        max_retry_s: float = 60.0,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.stopping = threading.Event()
        self._tasks: dict[str, _Running] = {}
        self._changed = threading.Condition()
        self._dirty = False  # a task ended (or stop was asked) since the watcher last looked
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._backoff_s = backoff_s
        self._max_retry_s = max_retry_s
        self._on_restart = on_restart

    def add(self, name: str, target: Task) -> None:
        self._tasks[name] = _Running(name, target)

    def running(self) -> dict[str, bool]:
        """Each task's name and whether it is up: its thread alive and not in an outage (what /readyz reports)."""
        return {
            name: t.thread is not None and t.thread.is_alive() and t.outage_attempts == 0
            for name, t in self._tasks.items()
        }

    def recovered(self, name: str) -> None:
        """Called by a task once it works again after a temporary error (a broker answered)."""
        task = self._tasks[name]
        if task.outage_attempts:
            log.info("task %s recovered after %d attempts", name, task.outage_attempts)
            task.outage_attempts = 0

    def stop(self) -> None:
        self.stopping.set()
        with self._changed:
            self._dirty = True
            self._changed.notify_all()

    def run(self, *, join_timeout_s: float = 60.0) -> None:
        """Until `stop()`; raises TaskFailed when a task exhausts its restarts (all others are stopped first)."""
        for task in self._tasks.values():
            self._start(task)
        failure: TaskFailed | None = None
        try:
            failure = self._watch()
        finally:
            self.stopping.set()
            deadline = time.monotonic() + join_timeout_s
            for task in self._tasks.values():
                if task.thread is not None:
                    task.thread.join(max(0.0, deadline - time.monotonic()))
                    if task.thread.is_alive():
                        log.error("task %s did not stop within %.0f s", task.name, join_timeout_s)
        if failure is not None:
            raise failure

    def _watch(self) -> TaskFailed | None:
        while not self.stopping.is_set():
            due = [t.restart_at for t in self._tasks.values() if t.restart_at is not None]
            with self._changed:
                if not self._dirty:  # a task that ended before this wait still counts
                    self._changed.wait(timeout=min([0.5, *(at - time.monotonic() for at in due)]))
                self._dirty = False
            now = time.monotonic()
            for task in self._tasks.values():
                if task.restart_at is not None:
                    if now >= task.restart_at:
                        task.restart_at = None
                        if self._on_restart is not None:
                            self._on_restart(task.name)
                        self._start(task)
                    continue
                if task.thread is None or task.thread.is_alive() or self.stopping.is_set():
                    continue
                if isinstance(task.error, TemporaryError):
                    task.restart_at = now + self._retry_delay(task, task.error)
                    continue
                reason = f"{type(task.error).__name__}: {task.error}" if task.error else "returned unexpectedly"
                task.failures = [t for t in task.failures if now - t < self._window_s] + [now]
                if len(task.failures) > self._max_restarts:
                    times = len(task.failures)
                    return TaskFailed(
                        f"task {task.name!r} failed {times} times in {self._window_s:.0f} s; last: {reason}"
                    )
                delay = self._backoff_s * 2 ** (len(task.failures) - 1)
                log.error("task %s failed (%s); restarting in %.1f s", task.name, reason, delay)
                task.restart_at = now + delay
        return None

    def _retry_delay(self, task: _Running, error: TemporaryError) -> float:
        task.outage_attempts += 1
        delay = min(self._max_retry_s, max(self._backoff_s, float(error.delay)) * 2.0 ** (task.outage_attempts - 1))
        log.warning("task %s: %s; retrying in %.0f s (attempt %d)", task.name, error, delay, task.outage_attempts)
        return delay

    def _start(self, task: _Running) -> None:
        task.error = None

        def body() -> None:
            try:
                task.target(self.stopping)
            except TemporaryError as exc:  # an outage: the watcher logs one line, no traceback
                task.error = exc
            except BaseException as exc:  # reported by the watcher, with the task's name
                task.error = exc
                log.exception("task %s raised", task.name)
            finally:
                with self._changed:
                    self._dirty = True
                    self._changed.notify_all()

        task.thread = threading.Thread(target=body, name=f"task-{task.name}", daemon=True)
        task.thread.start()

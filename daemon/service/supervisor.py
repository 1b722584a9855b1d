"""One supervisor owns the daemon's named tasks: it starts them, restarts a failed one with
backoff, and stops all of them together.

A task is a function of a stop event that runs until the event is set. If it raises (or
returns while the daemon is not stopping), it is restarted after `backoff_s`, doubled for
each failure within `window_s`; more than `max_restarts` failures in that window stop the
daemon with a clear reason and exit status 1. `stop()` (SIGTERM) sets the event and waits
for every task to return: sources stop fetching and commit, the scheduler stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    restart_at: float | None = None


class Supervisor:
    def __init__(
        self,
        *,
        max_restarts: int = 5,
        window_s: float = 300.0,
        backoff_s: float = 1.0,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.stopping = threading.Event()
        self._tasks: dict[str, _Running] = {}
        self._changed = threading.Condition()
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._backoff_s = backoff_s
        self._on_restart = on_restart

    def add(self, name: str, target: Task) -> None:
        self._tasks[name] = _Running(name, target)

    def running(self) -> dict[str, bool]:
        """Each task's name and whether its thread is alive (what /readyz reports)."""
        return {name: t.thread is not None and t.thread.is_alive() for name, t in self._tasks.items()}

    def stop(self) -> None:
        self.stopping.set()
        with self._changed:
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
            with self._changed:
                self._changed.wait(timeout=0.5)
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

    def _start(self, task: _Running) -> None:
        task.error = None

        def body() -> None:
            try:
                task.target(self.stopping)
            except BaseException as exc:  # reported by the watcher, with the task's name
                task.error = exc
                log.exception("task %s raised", task.name)
            finally:
                with self._changed:
                    self._changed.notify_all()

        task.thread = threading.Thread(target=body, name=f"task-{task.name}", daemon=True)
        task.thread.start()

"""Round processes: one `taoflow round` child at a time, started, watched and stopped by the daemon."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

__all__ = ["EXIT_OUTCOMES", "NOTHING_TO_TRAIN", "SKIPPED", "RoundLauncher"]

log = logging.getLogger(__name__)

#: `taoflow round`'s exit status when the buffer held nothing new to train on (no round was recorded).
NOTHING_TO_TRAIN = 5

#: `taoflow round`'s exit status when its candidates gave nothing to learn from (the round is recorded as skipped).
SKIPPED = 6

#: `taoflow round` exit statuses, as metric labels (anything else: error).
EXIT_OUTCOMES = {
    0: "passed",
    3: "rejected",
    4: "busy",
    NOTHING_TO_TRAIN: "nothing_to_train",
    SKIPPED: "skipped",
    130: "interrupted",
    -signal.SIGTERM: "interrupted",
    -signal.SIGKILL: "killed",
}


class RoundLauncher:
    """Runs one `taoflow round` child process at a time."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        drain_s: float,
        on_exit: Callable[[int], None],
        relay: Callable[[str, str], str] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """`relay(line, tag)` turns each line the round writes into a line of the daemon's stream; None lets
        the round write to the daemon's own stdout and stderr. A round still running after `timeout_s` is
        stopped at its next checkpoint (killed after `drain_s`); the next evaluation resumes it, and one that
        keeps running out of time is failed after the flywheel's resumptions."""
        self._command = list(command)
        self._timeout_s = timeout_s
        self._relay = relay
        self._drain_s = drain_s
        self._on_exit = on_exit
        self._process: subprocess.Popen[str] | None = None
        self._waiter: threading.Thread | None = None
        self.last_exit_at: float | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, tasks: Sequence[str] = (), max_prompts: int | None = None) -> bool:
        with self._lock:
            if self.running:
                return False
            command = [*self._command]
            if tasks:
                command += ["--tasks", ",".join(tasks)]
            if max_prompts is not None:
                command += ["--max-prompts", str(max_prompts)]
            log.info("starting a round: %s", " ".join(command[-6:]))
            piped = subprocess.PIPE if self._relay is not None else None
            process = subprocess.Popen(
                command,
                stdout=piped,
                stderr=subprocess.STDOUT if piped else None,
                text=True,
                errors="replace",
            )
            if process.stdout is not None and self._relay is not None:
                tag = f"round {process.pid}"
                threading.Thread(
                    target=_relay, args=(process.stdout, tag, self._relay), name="round-output", daemon=True
                ).start()
            self._process = process
            self._waiter = threading.Thread(target=self._wait, args=(process,), name="round-wait", daemon=True)
            self._waiter.start()
        return True

    def _wait(self, process: subprocess.Popen[str]) -> None:
        try:
            code = process.wait(timeout=self._timeout_s)
        except subprocess.TimeoutExpired:
            log.error("the round ran past daemon.round_timeout_seconds (%.0f s): stopping it", self._timeout_s)
            self._terminate(process)
            code = process.wait()
        if code != NOTHING_TO_TRAIN:  # a round that never started costs no cooldown
            self.last_exit_at = time.time()
        log.info("round process %d exited with %d", process.pid, code)
        self._on_exit(code)

    def stop(self) -> None:
        """SIGTERM: the round stops at its next checkpoint (resumed on restart); SIGKILL after drain_s."""
        process = self._process
        if process is not None and process.poll() is None:
            self._terminate(process)
        if self._waiter is not None:
            self._waiter.join()  # its exit is accounted for before the state closes

    def _terminate(self, process: subprocess.Popen[str]) -> None:
        log.info("stopping the running round (up to %.0f s to reach a checkpoint)", self._drain_s)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=self._drain_s)
        except subprocess.TimeoutExpired:
            log.warning(
                "the round did not stop within %.0f s: killing it (it resumes from its last step)", self._drain_s
            )
            process.kill()
            process.wait()


def _relay(stream: IO[str], tag: str, relay: Callable[[str, str], str]) -> None:
    """Each line the round writes, tagged, into the daemon's stderr; a line is read at most 64 KiB at a time."""
    for line in iter(lambda: stream.readline(65536), ""):
        sys.stderr.write(relay(line, tag) + "\n")
    stream.close()

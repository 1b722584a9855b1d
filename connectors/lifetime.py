"""Helper processes that must not outlive the process that owns them, even when it is SIGKILLed."""

from __future__ import annotations

import os
import select
import threading

__all__ = ["exit_with", "process_alive"]


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def exit_with(owner: int) -> None:
    """End this process as soon as process `owner` has exited (a Linux pidfd, watched from a thread).

    Used by parser workers (whose task queue never reports their owner's death) and by
    round processes the daemon starts: the round stops where its last completed step left
    it, and the restarted daemon resumes it.
    """
    try:
        handle = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(1)

    def wait() -> None:
        select.select([handle], [], [])  # readable once the owner has exited
        os._exit(1)

    threading.Thread(target=wait, name="owner-watch", daemon=True).start()

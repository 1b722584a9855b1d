"""A named lock in the state database that survives the death of its holder, and is taken over when stale.

At most one round runs at a time, whether the daemon started it or an operator ran
`taoflow round`: both take the `round` lease. The holder renews it while it works; a
lease is stale once it has not been renewed for `stale_after_s`, or at once when its
holder ran on this host and that process is gone.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from taoflow.connectors.lifetime import process_alive
from taoflow.daemon.store.storage import Database

__all__ = ["Lease", "LeaseHolder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseHolder:
    owner: str
    host: str
    pid: int
    acquired_at: float
    renewed_at: float


class Lease:
    def __init__(self, db: Database, name: str, *, stale_after_s: float, pid: int | None = None) -> None:
        self._db = db
        self.name = name
        self.stale_after_s = stale_after_s
        self.host = socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.owner = f"{self.host}:{self.pid}"
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()

    def holder(self, *, now: float | None = None) -> LeaseHolder | None:
        """The live holder, if any (a stale holder counts as none)."""
        rows = self._db.query("SELECT owner, host, pid, acquired_at, renewed_at FROM leases WHERE name=?", (self.name,))
        if not rows:
            return None
        holder = LeaseHolder(*rows[0])
        return None if self._stale(holder, time.time() if now is None else now) else holder

    def acquire(self, *, now: float | None = None) -> LeaseHolder | None:
        """Take the lease; return None on success, or the live holder that has it."""
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT owner, host, pid, acquired_at, renewed_at FROM leases WHERE name=?", (self.name,)
            ).fetchone()
            if row is not None:
                holder = LeaseHolder(*row)
                if holder.owner != self.owner and not self._stale(holder, now):
                    return holder
                if holder.owner != self.owner:
                    log.warning("taking over the stale %s lease of %s", self.name, holder.owner)
            conn.execute(
                "INSERT OR REPLACE INTO leases (name, owner, host, pid, acquired_at, renewed_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (self.name, self.owner, self.host, self.pid, now, now),
            )
        return None

    def renew(self, *, now: float | None = None) -> bool:
        """Extend the lease; False if it is no longer ours (taken over as stale)."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "UPDATE leases SET renewed_at=? WHERE name=? AND owner=?",
                (time.time() if now is None else now, self.name, self.owner),
            )
        return cursor.rowcount == 1

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM leases WHERE name=? AND owner=?", (self.name, self.owner))

    def keep_renewed(self) -> None:
        """Renew from a background thread until `release`."""

        def renew_loop() -> None:
            while not self._stop.wait(self.stale_after_s / 4):
                if not self.renew():
                    log.error("the %s lease was taken over: another holder thought this one dead", self.name)
                    return

        self._renewer = threading.Thread(target=renew_loop, name=f"lease-{self.name}", daemon=True)
        self._renewer.start()

    def _stale(self, holder: LeaseHolder, now: float) -> bool:
        if now - holder.renewed_at > self.stale_after_s:
            return True
        return holder.host == self.host and not process_alive(holder.pid)

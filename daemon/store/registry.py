"""The adapter registry: versions, lineage, states and the `champion`/`previous` aliases.

States and the transitions allowed between them:

    candidate ──gate pass──▶ gated ──promote──▶ champion ──replaced/rolled back──▶ retired
        │                      │                                                    │
        └──gate fail──▶ rejected ◀────────────────────────────────────── (never)    └─▶ champion (rollback)

Every change is one SQLite transaction that updates the version, writes an event and
moves the aliases together, so a crash never leaves two champions or a dangling alias.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from taoflow.connectors.errors import RegistryError, UnknownVersion
from taoflow.daemon.store.storage import Database

__all__ = ["TRANSITIONS", "AdapterVersion", "Registry"]

TRANSITIONS: dict[str, frozenset[str]] = {
    "candidate": frozenset({"gated", "rejected"}),
    "gated": frozenset({"champion", "rejected", "retired"}),
    "champion": frozenset({"retired"}),
    "retired": frozenset({"champion"}),
    "rejected": frozenset(),
}


@dataclass(frozen=True)
class AdapterVersion:
    version: str
    model: str
    state: str
    parent: str | None
    base_model: str
    base_digest: str
    uri: str
    manifest: dict[str, Any]
    reason: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class AdapterEvent:
    version: str
    from_state: str | None
    to_state: str
    reason: str
    at: float


class Registry:
    """Adapter versions of every served model, in the shared state database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def register(
        self,
        *,
        version: str,
        model: str,
        parent: str | None,
        base_model: str,
        base_digest: str,
        uri: str,
        manifest: dict[str, Any],
        now: float | None = None,
    ) -> AdapterVersion:
        now = time.time() if now is None else now
        with self._db.transaction() as conn:
            if conn.execute("SELECT 1 FROM adapters WHERE version=?", (version,)).fetchone():
                raise RegistryError(f"adapter version {version} is already registered")
            conn.execute(
                "INSERT INTO adapters (version, model, state, parent, base_model, base_digest, uri, manifest,"
                " created_at, updated_at) VALUES (?, ?, 'candidate', ?, ?, ?, ?, ?, ?, ?)",
                (version, model, parent, base_model, base_digest, uri, json.dumps(manifest), now, now),
            )
            conn.execute(
                "INSERT INTO adapter_events (version, from_state, to_state, reason, at) VALUES (?, NULL, ?, ?, ?)",
                (version, "candidate", "registered", now),
            )
        return self.get(version)

    def get(self, version_or_alias: str, *, model: str | None = None) -> AdapterVersion:
        version = version_or_alias
        if model is not None and version_or_alias in ("champion", "previous"):
            resolved = self.alias(model, version_or_alias)
            if resolved is None:
                raise UnknownVersion(f"model {model!r} has no {version_or_alias} adapter yet")
            version = resolved
        rows = self._db.query("SELECT * FROM adapters WHERE version=?", (version,))
        if not rows:
            raise UnknownVersion(f"no adapter version {version!r}; `taoflow adapters list` shows the known ones")
        return _row(rows[0])

    def versions(self, *, model: str | None = None) -> list[AdapterVersion]:
        sql: str = "SELECT * FROM adapters ORDER BY created_at, version"
        params: tuple[object, ...] = ()
        if model is not None:
            sql, params = "SELECT * FROM adapters WHERE model=? ORDER BY created_at, version", (model,)
        return [_row(r) for r in self._db.query(sql, params)]

    def alias(self, model: str, alias: str) -> str | None:
        rows = self._db.query("SELECT version FROM aliases WHERE model=? AND alias=?", (model, alias))
        return str(rows[0][0]) if rows else None

    def events(self, version: str) -> list[AdapterEvent]:
        rows = self._db.query(
            "SELECT version, from_state, to_state, reason, at FROM adapter_events WHERE version=? ORDER BY id",
            (version,),
        )
        return [AdapterEvent(*tuple(r)) for r in rows]

    def transition_counts(self) -> dict[tuple[str | None, str], int]:
        """How often each registry edge (from state, to state) has been taken, over every model."""
        rows = self._db.query("SELECT from_state, to_state, count(*) FROM adapter_events GROUP BY from_state, to_state")
        return {(r[0], str(r[1])): int(r[2]) for r in rows}

    def last_rollback_at(self, model: str) -> float | None:
        """When a retired adapter of the model was last made champion again (by the watch or by hand)."""
        rows = self._db.query(
            "SELECT max(e.at) FROM adapter_events e JOIN adapters a ON a.version = e.version"
            " WHERE a.model=? AND e.to_state='champion' AND e.from_state='retired'",
            (model,),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def transition(self, version: str, to_state: str, *, reason: str, now: float | None = None) -> AdapterVersion:
        """Move one version along an allowed edge (gate results; use promote/rollback for champions)."""
        if to_state == "champion":
            raise RegistryError("use promote() or rollback() to make a champion: aliases must move with it")
        with self._db.transaction() as conn:
            self._move(conn, version, to_state, reason, time.time() if now is None else now)
        return self.get(version)

    def promote(self, version: str, *, reason: str, now: float | None = None) -> AdapterVersion:
        """Make a gated version the champion; the old champion is retired and becomes `previous`."""
        now = time.time() if now is None else now
        target = self.get(version)
        if target.state != "gated":
            raise RegistryError(f"only a gated adapter can be promoted; {version} is {target.state}")
        with self._db.transaction() as conn:
            self._swap_champion(conn, target.model, version, reason, now)
        return self.get(version)

    def rollback(self, model: str, *, to: str | None = None, reason: str, now: float | None = None) -> AdapterVersion:
        """Reinstate `to` (default: the `previous` alias) as champion, retiring the current one."""
        now = time.time() if now is None else now
        version = to or self.rollback_target(model)
        target = self.get(version)
        if target.model != model:
            raise RegistryError(f"{version} belongs to {target.model}, not {model}")
        if target.state not in ("retired", "gated"):
            raise RegistryError(f"cannot roll back to {version}: it is {target.state} (need retired or gated)")
        with self._db.transaction() as conn:
            self._swap_champion(conn, model, version, reason, now)
        return self.get(version)

    def rollback_target(self, model: str) -> str:
        """The `previous` alias, or an error that says what there is to roll back to instead."""
        previous = self.alias(model, "previous")
        if previous is not None:
            return previous
        if not self.versions(model=model):
            raise RegistryError(f"model {model!r} has no adapters yet: there is nothing to roll back")
        raise RegistryError(
            f"model {model!r} has no previous adapter; pick a version with --to VERSION (`taoflow adapters list`)"
        )

    def _swap_champion(self, conn: Any, model: str, version: str, reason: str, now: float) -> None:
        current = conn.execute("SELECT version FROM aliases WHERE model=? AND alias='champion'", (model,)).fetchone()
        if current is not None and current[0] != version:
            self._move(conn, current[0], "retired", f"replaced by {version}: {reason}", now)
            conn.execute(
                "INSERT OR REPLACE INTO aliases (model, alias, version) VALUES (?, 'previous', ?)",
                (model, current[0]),
            )
        self._move(conn, version, "champion", reason, now)
        conn.execute(
            "INSERT OR REPLACE INTO aliases (model, alias, version) VALUES (?, 'champion', ?)", (model, version)
        )

    def _move(self, conn: Any, version: str, to_state: str, reason: str, now: float) -> None:
        row = conn.execute("SELECT state FROM adapters WHERE version=?", (version,)).fetchone()
        if row is None:
            raise UnknownVersion(f"no adapter version {version!r}")
        if to_state not in TRANSITIONS[row[0]]:
            raise RegistryError(f"{version}: {row[0]} -> {to_state} is not an allowed transition")
        conn.execute(
            "UPDATE adapters SET state=?, reason=?, updated_at=? WHERE version=?", (to_state, reason, now, version)
        )
        conn.execute(
            "INSERT INTO adapter_events (version, from_state, to_state, reason, at) VALUES (?, ?, ?, ?, ?)",
            (version, row[0], to_state, reason, now),
        )


def _row(row: Any) -> AdapterVersion:
    data = dict(row)
    data["manifest"] = json.loads(data["manifest"])
    return AdapterVersion(**data)

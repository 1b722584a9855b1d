"""The route table of `fleet.routing: gateway`: which adapter versions the stable name means, by weight.

Deploys write it; gateways read it through the admin API (GET /v1/routes) and report back the
generation they apply and their requests in flight per served name, so a deploy can wait for the old
version to drain before it unloads it. Every change raises the table's generation (one counter for all
models), so a gateway knows whether it has seen a change.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from taoflow.connectors.errors import InvalidRequest
from taoflow.daemon.store.storage import Database

#: Gateways whose reports are kept at once, and how long a silent one's is kept.
MAX_GATEWAYS = 256
FORGET_AFTER_S = 3600.0

__all__ = ["Drain", "RouteStore", "RouteTable", "Target", "bump_generation"]


@dataclass(frozen=True)
class Target:
    """One version the stable name is sent to, and its share of the name's requests."""

    version: str
    weight: float


@dataclass(frozen=True)
class RouteTable:
    generation: int
    routes: dict[str, tuple[Target, ...]]
    #: Shadow deploys: per stable name, the candidate its requests are mirrored to (store/shadows.py Mirror.as_dict).
    shadows: dict[str, dict[str, object]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "generation": self.generation,
            "routes": {
                model: [{"version": t.version, "weight": t.weight} for t in targets]
                for model, targets in sorted(self.routes.items())
            },
            "shadows": dict(sorted(self.shadows.items())),
        }


def bump_generation(conn: sqlite3.Connection) -> int:
    """Raise the route table's generation without changing a route (a placeholder row carries it)."""
    generation = int(conn.execute("SELECT COALESCE(MAX(generation), 0) FROM routes").fetchone()[0]) + 1
    conn.execute(
        "INSERT INTO routes (model, generation, targets, updated_at) VALUES ('', ?, '[]', ?)"
        " ON CONFLICT(model) DO UPDATE SET generation=excluded.generation, updated_at=excluded.updated_at",
        (generation, time.time()),
    )
    return generation


@dataclass(frozen=True)
class Drain:
    """Whether the gateways have left `name`: every live one applies the generation and has nothing in flight."""

    done: bool
    waiting: dict[str, str]  # gateway -> why it is waited for


class RouteStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def table(self) -> RouteTable:
        rows = self._db.query("SELECT model, generation, targets FROM routes")
        shadows = {r["model"]: json.loads(r["mirror"]) for r in self._db.query("SELECT model, mirror FROM shadows")}
        generation = max((int(r["generation"]) for r in rows), default=0)
        routes = {
            r["model"]: tuple(Target(t["version"], float(t["weight"])) for t in json.loads(r["targets"]))
            for r in rows
            if r["model"]  # '' carries the generation of a removed route
        }
        return RouteTable(generation, routes, shadows)

    def targets(self, model: str) -> tuple[Target, ...]:
        return self.table().routes.get(model, ())

    def set(self, model: str, targets: Sequence[Target]) -> int:
        """Route `model` to `targets` (weights > 0; empty removes the route); returns the new generation."""
        live = [t for t in targets if t.weight > 0]
        payload = json.dumps([{"version": t.version, "weight": round(t.weight, 6)} for t in live])
        with self._db.transaction() as conn:
            generation = int(conn.execute("SELECT COALESCE(MAX(generation), 0) FROM routes").fetchone()[0]) + 1
            if live:
                conn.execute(
                    "INSERT INTO routes (model, generation, targets, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(model) DO UPDATE SET generation=excluded.generation, targets=excluded.targets,"
                    " updated_at=excluded.updated_at",
                    (model, generation, payload, time.time()),
                )
            else:
                # A removed route still raises the generation: a placeholder row carries it.
                conn.execute("DELETE FROM routes WHERE model=?", (model,))
                conn.execute(
                    "INSERT INTO routes (model, generation, targets, updated_at) VALUES ('', ?, '[]', ?)"
                    " ON CONFLICT(model) DO UPDATE SET generation=excluded.generation, updated_at=excluded.updated_at",
                    (generation, time.time()),
                )
        return generation

    def report(self, gateway: str, generation: int, inflight: Mapping[str, int]) -> None:
        """A gateway's report, kept until it has been silent for FORGET_AFTER_S. At most MAX_GATEWAYS report at
        once: a holder of the gateway token cannot grow the table (and every drain's read of it) without bound."""
        now = time.time()
        with self._db.transaction() as conn:
            conn.execute("DELETE FROM gateway_reports WHERE seen_at < ?", (now - FORGET_AFTER_S,))
            known = conn.execute("SELECT 1 FROM gateway_reports WHERE gateway = ?", (gateway,)).fetchone()
            held = int(conn.execute("SELECT count(*) FROM gateway_reports").fetchone()[0])
            if known is None and held >= MAX_GATEWAYS:
                raise InvalidRequest(
                    f"{held} gateways report already (at most {MAX_GATEWAYS}); one silent for "
                    f"{FORGET_AFTER_S:.0f} s is forgotten"
                )
            conn.execute(
                "INSERT INTO gateway_reports (gateway, generation, inflight, seen_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(gateway) DO UPDATE SET generation=excluded.generation, inflight=excluded.inflight,"
                " seen_at=excluded.seen_at",
                (gateway, int(generation), json.dumps(dict(inflight)), now),
            )

    def gateways(self, *, stale_after: float) -> dict[str, dict[str, object]]:
        """The gateways that reported within `stale_after` seconds: their generation and requests in flight."""
        since = time.time() - stale_after
        return {
            r["gateway"]: {"generation": int(r["generation"]), "inflight": json.loads(r["inflight"])}
            for r in self._db.query("SELECT * FROM gateway_reports WHERE seen_at >= ?", (since,))
        }

    def drained(self, name: str, *, generation: int, stale_after: float) -> Drain:
        waiting: dict[str, str] = {}
        for gateway, report in self.gateways(stale_after=stale_after).items():
            seen = report["generation"]
            inflight = report["inflight"]
            assert isinstance(seen, int) and isinstance(inflight, dict)
            if seen < generation:
                waiting[gateway] = f"applies route generation {seen} < {generation}"
            elif inflight.get(name, 0):
                waiting[gateway] = f"{inflight[name]} request(s) in flight on {name}"
        return Drain(not waiting, waiting)

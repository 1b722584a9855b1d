"""Shadow deploys' durable part: which version the stable name's requests are mirrored to, and the pairs of answers
gateways send back (the champion's exchange and the candidate's, same request).

Gateways read the mirror with the route table (it raises the table's generation, so a gateway looks at what the
replicas serve before it mirrors); the daemon keeps at most `max_pairs` pairs per deploy and reads them to decide.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from taoflow.daemon.store.routes import bump_generation
from taoflow.daemon.store.storage import Database

__all__ = ["Mirror", "Pair", "ShadowStore"]


@dataclass(frozen=True)
class Mirror:
    """What gateways are told of a shadow: the candidate version, its deploy, and how much traffic it may take."""

    version: str
    deploy: int
    rate: float
    max_concurrent: int
    max_share: float
    max_tokens: int
    timeout_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Pair:
    """One mirrored request: the champion's exchange and the candidate's, as captured rows (request and answer)."""

    request_id: str
    gateway: str
    champion: dict[str, Any]
    candidate: dict[str, Any]


class ShadowStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def start(self, model: str, mirror: Mirror) -> int:
        """Mirror `model`'s requests to `mirror.version`; returns the route generation that says so."""
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO shadows (model, deploy_id, version, mirror, started_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(model) DO UPDATE SET deploy_id=excluded.deploy_id, version=excluded.version,"
                " mirror=excluded.mirror, started_at=excluded.started_at",
                (model, mirror.deploy, mirror.version, json.dumps(mirror.as_dict()), time.time()),
            )
            return bump_generation(conn)

    def stop(self, model: str, *, deploy: int) -> int | None:
        """Stop `deploy`'s mirror of `model` (if it is still the one); the new route generation, or None."""
        with self._db.transaction() as conn:
            gone = conn.execute("DELETE FROM shadows WHERE model=? AND deploy_id=?", (model, deploy)).rowcount
            return bump_generation(conn) if gone else None

    def active(self) -> dict[str, Mirror]:
        return {r["model"]: Mirror(**json.loads(r["mirror"])) for r in self._db.query("SELECT * FROM shadows")}

    def add(self, gateway: str, pairs: Sequence[Mapping[str, Any]], *, max_pairs: int) -> dict[str, int]:
        """Keep the pairs of deploys that are shadowing now, up to `max_pairs` each; counts kept and refused (a
        deploy not shadowing, one that has its fill, a request id sent twice)."""
        counts = {"kept": 0, "not_shadowing": 0, "full": 0, "duplicate": 0}
        now = time.time()
        with self._db.transaction() as conn:
            shadowing = {int(r[0]) for r in conn.execute("SELECT deploy_id FROM shadows")}
            held: dict[int, int] = {}
            for pair in pairs:
                deploy = int(pair["deploy"])
                if deploy not in shadowing:
                    counts["not_shadowing"] += 1
                    continue
                if deploy not in held:
                    held[deploy] = int(
                        conn.execute("SELECT count(*) FROM shadow_pairs WHERE deploy_id=?", (deploy,)).fetchone()[0]
                    )
                if held[deploy] >= max_pairs:
                    counts["full"] += 1
                    continue
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO shadow_pairs (deploy_id, request_id, gateway, champion, candidate,"
                    " received_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        deploy,
                        str(pair["request_id"]),
                        gateway,
                        json.dumps(pair["champion"]),
                        json.dumps(pair["candidate"]),
                        now,
                    ),
                )
                if cursor.rowcount:
                    held[deploy] += 1
                    counts["kept"] += 1
                else:
                    counts["duplicate"] += 1
        return counts

    def count(self, deploy: int) -> int:
        return int(self._db.query("SELECT count(*) AS n FROM shadow_pairs WHERE deploy_id=?", (deploy,))[0]["n"])

    def pairs(self, deploy: int) -> list[Pair]:
        rows = self._db.query("SELECT * FROM shadow_pairs WHERE deploy_id=? ORDER BY id", (deploy,))
        return [
            Pair(r["request_id"], r["gateway"], json.loads(r["champion"]), json.loads(r["candidate"])) for r in rows
        ]

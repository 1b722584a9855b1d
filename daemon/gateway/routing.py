"""Which replica, under which served name, answers a request for a model name.

The route table (from the daemon) maps a stable name to versions by weight; each replica's served
names come from its GET /v1/models. A request for a routed name goes to one of its versions (by
weight), on the healthy replica serving that version with the fewest requests outstanding; if no
replica serves the chosen version yet, the name's other versions are tried. A name with no route
passes through unchanged. Requests in flight are counted per served name (routed versions and names a replica
lists, never a name only the client used): the daemon waits for the old version's count to reach zero before it
unloads it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Choice", "ReplicaState", "Router"]


@dataclass
class ReplicaState:
    url: str
    healthy: bool = False
    names: frozenset[str] = frozenset()
    outstanding: int = 0


@dataclass(frozen=True)
class Choice:
    url: str
    name: str  # what the replica is asked for: the version a routed name maps to, or the name itself
    routed: bool
    #: Counted in flight (and so reported to the daemon): a routed version or a name a replica lists; never a
    #: string only the client chose, which would make the report the daemon reads the client's to write.
    counted: bool = True


@dataclass
class Router:
    rng: random.Random = field(default_factory=random.Random)
    generation: int = 0
    routes: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    #: Shadow deploys: a stable name's candidate and its budget, as the daemon's table says (store/shadows.Mirror).
    shadows: dict[str, dict[str, Any]] = field(default_factory=dict)
    replicas: dict[str, ReplicaState] = field(default_factory=dict)
    inflight: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ state
    def apply(self, table: Mapping[str, object]) -> bool:
        """Take a route table (GET /v1/routes); False when it is not newer than the one applied."""
        generation = table.get("generation")
        routes = table.get("routes")
        if not isinstance(generation, int) or not isinstance(routes, dict) or generation < self.generation:
            return False
        parsed: dict[str, tuple[tuple[str, float], ...]] = {}
        for model, targets in routes.items():
            if not isinstance(targets, list):
                continue
            parsed[str(model)] = tuple(
                (str(t["version"]), float(t["weight"]))
                for t in targets
                if isinstance(t, dict)
                and isinstance(t.get("version"), str)
                and isinstance(t.get("weight"), int | float)
                and t["weight"] > 0
            )
        shadows = table.get("shadows")
        self.shadows = {
            str(model): dict(mirror)
            for model, mirror in (shadows.items() if isinstance(shadows, dict) else ())
            if isinstance(mirror, dict) and isinstance(mirror.get("version"), str)
        }
        self.routes, self.generation = parsed, generation
        return True

    def set_replicas(self, urls: Iterable[str]) -> None:
        wanted = set(urls)
        for url in wanted - set(self.replicas):
            self.replicas[url] = ReplicaState(url)
        for url in set(self.replicas) - wanted:
            if self.replicas[url].outstanding == 0:
                del self.replicas[url]
            else:
                self.replicas[url].healthy = False  # scaled in: finishes what it has, gets nothing new

    def observed(self, url: str, names: Sequence[str] | None) -> None:
        """A replica's served names (None: it did not answer)."""
        replica = self.replicas.get(url)
        if replica is None:
            return
        replica.healthy = names is not None
        if names is not None:
            replica.names = frozenset(names)

    def down(self, url: str) -> None:
        if url in self.replicas:
            self.replicas[url].healthy = False

    def lost(self, url: str, name: str) -> None:
        """The replica answered that it does not serve `name` (unloaded since its last poll)."""
        if url in self.replicas:
            self.replicas[url].names = self.replicas[url].names - {name}

    # ------------------------------------------------------------------ choosing
    def choose(self, model: str, *, exclude: frozenset[tuple[str, str]] = frozenset()) -> Choice | None:
        targets = self.routes.get(model)
        if targets:
            ordered = self._by_weight(targets)
            for name in ordered:
                url = self._least_outstanding(name, exclude)
                if url is not None:
                    return Choice(url, name, routed=True)
            # No replica is known to serve any of them (a view older than the route): ask one that has not
            # answered for the first yet; a 404 from it is retried elsewhere.
            url = self._least_outstanding(None, exclude, excluded_as=ordered[0])
            return None if url is None else Choice(url, ordered[0], routed=True)
        url = self._least_outstanding(model, exclude)
        if url is not None:
            return Choice(url, model, routed=False)
        if any(model in r.names for r in self.replicas.values() if r.healthy):
            return None
        # Nobody lists it: a replica answers (the base model under another name, or a 404 naming it).
        url = self._least_outstanding(None, exclude, excluded_as=model)
        return None if url is None else Choice(url, model, routed=False, counted=False)

    def serving(self, name: str) -> Choice | None:
        """A healthy replica that lists `name` (fewest outstanding), for a mirrored request; None when none does."""
        url = self._least_outstanding(name, frozenset())
        return None if url is None else Choice(url, name, routed=False)

    def shadowed(self) -> set[str]:
        """The candidate versions being shadowed: never a client's to call (their answers are for the daemon)."""
        return {str(m["version"]) for m in self.shadows.values()}

    def _by_weight(self, targets: Sequence[tuple[str, float]]) -> list[str]:
        """Every target, the first drawn by weight, the rest after it (fallbacks)."""
        total = sum(w for _, w in targets)
        point = self.rng.random() * total
        first = targets[-1][0]
        for name, weight in targets:
            point -= weight
            if point < 0:
                first = name
                break
        return [first, *(name for name, _ in targets if name != first)]

    def _least_outstanding(
        self, name: str | None, exclude: frozenset[tuple[str, str]], *, excluded_as: str = ""
    ) -> str | None:
        """The healthy replica serving `name` (None: any) with the fewest outstanding requests, not yet tried."""
        tried = {url for url, n in exclude if n == (name or excluded_as)}
        candidates = [
            r for r in self.replicas.values() if r.healthy and (name is None or name in r.names) and r.url not in tried
        ]
        if not candidates:
            return None
        least = min(r.outstanding for r in candidates)
        return self.rng.choice([r.url for r in candidates if r.outstanding == least])

    # ------------------------------------------------------------------ accounting
    def begin(self, choice: Choice) -> None:
        replica = self.replicas.get(choice.url)
        if replica is not None:
            replica.outstanding += 1
        if choice.counted:
            self.inflight[choice.name] = self.inflight.get(choice.name, 0) + 1

    def end(self, choice: Choice) -> None:
        replica = self.replicas.get(choice.url)
        if replica is not None:
            replica.outstanding = max(0, replica.outstanding - 1)
        if not choice.counted:
            return
        left = self.inflight.get(choice.name, 0) - 1
        if left > 0:
            self.inflight[choice.name] = left
        else:
            self.inflight.pop(choice.name, None)

    def names(self) -> set[str]:
        """Every name a client may call: routed names and what healthy replicas serve."""
        served = {n for r in self.replicas.values() if r.healthy for n in r.names}
        return (set(self.routes) | served) - self.shadowed()

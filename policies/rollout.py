"""Rollout policy: which replicas get a new adapter in which order, and when a live one must go.

Purely computational: replica lists, counters and scores in; frozen plans and decisions
with a readable `reason` out. `taoflow.daemon.fleet.deploy` carries them out and records them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Repair",
    "RolloutPlan",
    "WatchDecision",
    "WatchSnapshot",
    "WatchThresholds",
    "decide_watch",
    "plan_repairs",
    "plan_rollout",
]


@dataclass(frozen=True)
class RolloutPlan:
    """Waves of replicas; the first wave is the canary when `smoke` is set."""

    waves: tuple[tuple[str, ...], ...]
    smoke: bool
    reason: str


def plan_rollout(
    replicas: Sequence[str], *, canary: int, batch_size: int, smoke: bool, unreachable: Collection[str] = ()
) -> RolloutPlan:
    """Canary first (smoke-tested before anything else moves), then the rest in batches.

    Replicas that did not answer just now go last: the canary is one that answers (a dead canary would revert the
    deploy), and a dead replica in the last wave is skipped while `fleet.max_unavailable` allows.
    A rollback (`smoke=False`) uses the same waves: one replica first, so a reinstated
    adapter that no longer loads stops the rollback before it touches every replica.
    """
    down = set(unreachable)
    unique = sorted(dict.fromkeys(replicas))
    ordered = [r for r in unique if r not in down] + [r for r in unique if r in down]
    if not ordered:
        return RolloutPlan((), smoke, "no replicas: nothing to roll out")
    head = max(1, min(canary, len(ordered)))
    waves = [tuple(ordered[:head])]
    rest = ordered[head:]
    step = max(1, batch_size)
    waves += [tuple(rest[i : i + step]) for i in range(0, len(rest), step)]
    first = "canary" if smoke else "first"
    late = sorted(down & set(unique))
    return RolloutPlan(
        tuple(waves),
        smoke,
        f"{first} {', '.join(waves[0])}, then {len(rest)} more in {len(waves) - 1} batch(es) of up to {step}"
        + (f" (unreachable now, so last: {', '.join(late)})" if late else ""),
    )


@dataclass(frozen=True)
class Repair:
    """Load `path` as `name` on `replica`, which serves `served` under that name now (None: nothing)."""

    replica: str
    name: str
    path: str
    served: str | None
    reason: str


def plan_repairs(
    observed: Mapping[str, Mapping[str, str] | None], desired: Mapping[str, str], *, known_names: frozenset[str]
) -> tuple[list[Repair], dict[str, list[str]]]:
    """Compare each replica's adapters (name -> path; None when unreachable) with the desired
    name -> path; return the repairs and the drift found, by kind: missing, stale, unknown,
    unreachable (lists of "replica name" strings, for reports)."""
    repairs: list[Repair] = []
    drift: dict[str, list[str]] = {"missing": [], "stale": [], "unknown": [], "unreachable": []}
    for replica, adapters in sorted(observed.items()):
        if adapters is None:
            drift["unreachable"].append(replica)
            continue
        for name, path in sorted(desired.items()):
            served = adapters.get(name)
            if served == path:
                continue
            kind = "missing" if served is None else "stale"
            drift[kind].append(f"{replica} {name}")
            reason = f"{name} is not loaded" if served is None else f"{name} serves {served}, want {path}"
            repairs.append(Repair(replica, name, path, served=served, reason=reason))
        for name in sorted(set(adapters) - set(desired) - known_names):
            drift["unknown"].append(f"{replica} {name}")
    return repairs, drift


@dataclass(frozen=True)
class WatchSnapshot:
    """Cumulative serving counters summed over replicas, and live-response scores, at one time."""

    requests: float
    errors: float
    latency_buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending
    scores: tuple[float, ...] = ()


@dataclass(frozen=True)
class WatchThresholds:
    max_error_rate: float = 0.05
    max_p99_latency_s: float | None = None
    max_score_drop: float = 0.1
    min_requests: int = 20
    min_scores: int = 20


@dataclass(frozen=True)
class WatchDecision:
    rollback: bool
    rule: str  # ok, error_rate, latency, live_score, too_little_traffic
    reason: str
    error_rate: float | None = None
    p99_latency_s: float | None = None
    live_score: float | None = None


def decide_watch(
    start: WatchSnapshot, now: WatchSnapshot, *, baseline_score: float | None, thresholds: WatchThresholds
) -> WatchDecision:
    """Roll back when, since `start`, errors or p99 latency cross their limits, or the mean score of
    live responses fell more than `max_score_drop` below `baseline_score` (the previous adapter's)."""
    requests = now.requests - start.requests
    errors = now.errors - start.errors
    rate = errors / requests if requests > 0 else None
    p99 = _quantile(start.latency_buckets, now.latency_buckets, 0.99)
    score = sum(now.scores) / len(now.scores) if now.scores else None
    seen = {"error_rate": rate, "p99_latency_s": p99, "live_score": score}
    t = thresholds
    if requests >= t.min_requests and rate is not None and rate > t.max_error_rate:
        return WatchDecision(
            True, "error_rate", f"error rate {rate:.1%} over {requests:.0f} requests > {t.max_error_rate:.1%}", **seen
        )
    if requests >= t.min_requests and t.max_p99_latency_s is not None and p99 is not None and p99 > t.max_p99_latency_s:
        return WatchDecision(True, "latency", f"p99 latency {p99:.2f} s > {t.max_p99_latency_s:.2f} s", **seen)
    judged = score is not None and baseline_score is not None and len(now.scores) >= t.min_scores
    if judged and baseline_score - score > t.max_score_drop:  # type: ignore[operator]
        return WatchDecision(
            True,
            "live_score",
            f"live score {score:.3f} over {len(now.scores)} responses fell "
            f"more than {t.max_score_drop:.3f} below {baseline_score:.3f}",
            **seen,
        )
    if requests < t.min_requests:
        return WatchDecision(False, "too_little_traffic", f"{requests:.0f} requests since the deploy", **seen)
    return WatchDecision(False, "ok", f"error rate {rate or 0.0:.1%} over {requests:.0f} requests", **seen)


def _quantile(start: Sequence[tuple[float, float]], now: Sequence[tuple[float, float]], q: float) -> float | None:
    """The bucket upper bound holding quantile q of the observations made between two histogram reads."""
    before = dict(start)
    deltas = [(bound, count - before.get(bound, 0.0)) for bound, count in now]
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return None
    for bound, count in deltas:
        if count >= q * total:
            return bound
    return deltas[-1][0]

"""What the reconciler, the deploys and the watch report to Prometheus.

Registered on an injected registry; names and labels follow the rules in service/metrics.py.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["FleetMetrics"]


DEPLOY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600)
SHADOW_OUTCOMES = ("promoted", "rejected", "monitor", "too_few")


class FleetMetrics:
    """The serving fleet as the reconciler and the deploys see it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.replicas = Gauge(
            "taoflow_fleet_replicas",
            "Serving replicas by state (up: answered the last reconcile).",
            ["state"],
            registry=registry,
        )
        self.drift = Gauge(
            "taoflow_fleet_drift",
            "Replica/adapter pairs that differ from the registry, by kind (missing, stale, unknown, unreachable).",
            ["kind"],
            registry=registry,
        )
        self.repairs = Counter(
            "taoflow_fleet_repairs_total",
            "Champion loads by the reconciler, by result.",
            ["result"],
            registry=registry,
        )
        for result in ("ok", "failed"):
            self.repairs.labels(result)  # from zero: the first repair is an increase
        self.unreachable = Gauge(
            "taoflow_fleet_replicas_unreachable",
            "Replicas that failed fleet.unreachable_alert_after reconciles in a row.",
            registry=registry,
        )
        self.last_reconcile = Gauge(
            "taoflow_fleet_last_reconcile_timestamp_seconds",
            "Unix time of the last reconcile pass.",
            registry=registry,
        )
        self.deploy_seconds = Histogram(
            "taoflow_deploy_duration_seconds",
            "Start of a deploy to every replica switched (or reverted), by kind and status.",
            ["kind", "status"],
            buckets=DEPLOY_BUCKETS,
            registry=registry,
        )
        for kind in ("promote", "rollback"):  # from zero, so the first deploy's duration is a rate
            for status in ("done", "reverted", "failed"):
                self.deploy_seconds.labels(kind, status)
        self.watch = Gauge(
            "taoflow_watch_value",
            "Post-deploy watch readings since the last deploy: error_rate, p99_latency_seconds, live_score.",
            ["signal"],
            registry=registry,
        )
        self.shadow_pairs = Gauge(
            "taoflow_shadow_pairs",
            "Pairs of answers the open shadow deploy has gathered (0: no shadow running).",
            registry=registry,
        )
        self.shadow_decisions = Counter(
            "taoflow_shadow_decisions_total",
            "Shadow deploys decided, by outcome (promoted; rejected; monitor: blocked by a scorer-gaming monitor;"
            " too_few: not enough pairs by the deadline).",
            ["outcome"],
            registry=registry,
        )
        for outcome in SHADOW_OUTCOMES:
            self.shadow_decisions.labels(outcome)

"""What `taoflow gateway` reports to Prometheus (its own /metrics); every series exists from zero."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

#: Whole requests (streams included) take seconds; the gateway's own share, milliseconds.
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ADDED_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
DROP_REASONS = ("spool_full", "too_large", "unparseable", "backlog", "error")
#: What happens to requests of a shadowed name: mirrored, or not (over max_concurrent, over max_share); a mirror that
#: found no replica serving the candidate, failed, timed out, or whose champion answer failed; pairs made, sent to the
#: daemon, refused by it or dropped here.
SHADOW_EVENTS = (
    "mirrored",
    "skipped_concurrency",
    "skipped_share",
    "no_replica",
    "failed",
    "timeout",
    "champion_failed",
    "paired",
    "sent",
    "refused",
    "dropped",
)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "taoflow_gateway_requests_total",
            "Requests answered, by endpoint and status code class (2xx, 4xx, 5xx; 499: the client left mid-answer).",
            ["endpoint", "code"],
            registry=registry,
        )
        for endpoint in ("chat", "completions", "responses", "messages"):
            for code in ("2xx", "4xx", "5xx", "499"):
                self.requests.labels(endpoint, code)
        self.seconds = Histogram(
            "taoflow_gateway_request_seconds",
            "Request latency at the gateway, first byte in to last byte out (streams included).",
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.added = Histogram(
            "taoflow_gateway_added_seconds",
            "Latency the gateway adds to a request: its whole time less the replica's (routing, capture).",
            buckets=ADDED_BUCKETS,
            registry=registry,
        )
        self.retries = Counter(
            "taoflow_gateway_retries_total",
            "Requests sent again to another replica, by reason (refused: no connection; gone: name unloaded).",
            ["reason"],
            registry=registry,
        )
        for reason in ("refused", "gone"):
            self.retries.labels(reason)
        self.unauthenticated = Counter(
            "taoflow_gateway_unauthenticated_total",
            "Requests refused at the door: no client key, a wrong one, or /metrics without the metrics token.",
            registry=registry,
        )
        self.inflight = Gauge("taoflow_gateway_inflight", "Requests in flight through the gateway.", registry=registry)
        self.replicas = Gauge(
            "taoflow_gateway_replicas", "Replicas by state (up: answered its last poll).", ["state"], registry=registry
        )
        for state in ("up", "down"):
            self.replicas.labels(state)
        self.routes_generation = Gauge(
            "taoflow_gateway_routes_generation", "Generation of the route table applied.", registry=registry
        )
        self.reports_refused = Counter(
            "taoflow_gateway_route_reports_refused_total",
            "Route reports (in-flight counts) the daemon refused: while they are, deploys cannot see this gateway's"
            " requests and stop waiting for them after fleet.gateway_stale_seconds.",
            registry=registry,
        )
        self.routes_age = Gauge(
            "taoflow_gateway_routes_age_seconds",
            "Seconds since the route table was last read from the daemon (the last known one is kept meanwhile).",
            registry=registry,
        )
        self.captured = Counter(
            "taoflow_gateway_capture_spooled_total", "Exchanges written to the capture spool.", registry=registry
        )
        self.sent = Counter(
            "taoflow_gateway_capture_sent_total", "Captured exchanges the sink accepted.", registry=registry
        )
        self.dropped = Counter(
            "taoflow_gateway_capture_dropped_total",
            "Exchanges not captured, by reason (spool_full, too_large, unparseable, backlog: large ones waiting for"
            " redaction, error: the record could not be built).",
            ["reason"],
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        self.spool_records = Gauge(
            "taoflow_gateway_spool_records", "Captured exchanges waiting in the spool.", registry=registry
        )
        self.spool_bytes = Gauge("taoflow_gateway_spool_bytes", "Bytes waiting in the spool.", registry=registry)
        self.capture_lag = Gauge(
            "taoflow_gateway_capture_lag_seconds",
            "Age of the oldest exchange still in the spool (0 when the sink has everything).",
            registry=registry,
        )
        self.shadow = Counter(
            "taoflow_gateway_shadow_total",
            "Shadow deploys: requests mirrored to the candidate or not (skipped_concurrency, skipped_share), mirrors"
            " that found no replica serving it, failed or timed out, pairs made, sent to the daemon, refused by it, or"
            " dropped (queue full).",
            ["event"],
            registry=registry,
        )
        for event in SHADOW_EVENTS:
            self.shadow.labels(event)
        self.shadow_inflight = Gauge(
            "taoflow_gateway_shadow_inflight", "Mirrored requests in flight to a shadowed candidate.", registry=registry
        )
        self.shadow_budget = Gauge(
            "taoflow_gateway_shadow_max_share",
            "The shadow's budget: the largest share of this gateway's requests on the replicas mirrors may be (0: no"
            " shadow).",
            registry=registry,
        )
        self.sink_up = Gauge(
            "taoflow_gateway_sink_up", "1 when the capture sink accepted the last write, else 0.", registry=registry
        )

"""The serving fleet as the daemon sees it: which replicas exist, where they read adapters,
what they serve, and the serving counters the post-deploy watch compares.

Replicas are re-discovered (static list plus headless-service DNS) on every call, so a
scale-out is seen at the next reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from taoflow.connectors.artifacts.local import LocalArtifactStore, validate_version
from taoflow.connectors.errors import ReplicaUnavailable
from taoflow.connectors.protocols import ArtifactStore, ReplicaView, ServingReplica
from taoflow.connectors.serving.replica import VllmReplica, discover_replicas
from taoflow.daemon.settings import FleetSettings
from taoflow.policies.rollout import WatchSnapshot

__all__ = ["Fleet", "serving_counters"]

log = logging.getLogger(__name__)

#: The OpenAI-API handlers whose answers the watch counts (4xx too: a vanished model name is a 404).
_HANDLERS = ("/v1/chat/completions", "/v1/completions")


class Fleet:
    """The replicas of `fleet` settings and the server-side paths of adapter versions."""

    def __init__(
        self,
        settings: FleetSettings,
        store: ArtifactStore,
        *,
        replica_factory: Callable[[str], ServingReplica] | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        key = settings.api_key.get_secret_value() if settings.api_key else None
        self._factory = replica_factory or (
            lambda url: VllmReplica(url, timeout_s=settings.request_timeout_seconds, api_key=key)
        )
        self._clients: dict[str, ServingReplica] = {}

    def urls(self) -> list[str]:
        s = self.settings
        return discover_replicas(s.replicas, dns_name=s.dns_name, port=s.port)

    def replica(self, url: str) -> ServingReplica:
        if url not in self._clients:
            self._clients[url] = self._factory(url)
        return self._clients[url]

    def server_path(self, version: str) -> str:
        """Where the servers read `version`. With a stage_dir (a volume the vLLM pods mount), the
        version is copied there first; the servers see it under adapter_root_on_servers."""
        local = self._store.fetch(validate_version(version))
        stage, root = self.settings.stage_dir, self.settings.adapter_root_on_servers
        if stage is not None:
            staged = LocalArtifactStore(stage)
            if not staged.exists(version):
                staged.put(version, local)
            return str((root or stage) / version)
        return str(root / version) if root is not None else str(local)

    def observe(self) -> dict[str, ReplicaView | None]:
        """Every replica's served adapters; None for one that did not answer."""
        views: dict[str, ReplicaView | None] = {}
        for url in self.urls():
            try:
                views[url] = self.replica(url).view()
            except ReplicaUnavailable as exc:
                log.warning("%s", exc)
                views[url] = None
        return views


def serving_counters(fleet: Fleet) -> WatchSnapshot:
    """Requests, errors (4xx/5xx answers of the OpenAI endpoints) and end-to-end latency buckets,
    summed over the replicas that answer; per-replica values so restarts can be seen."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for url in fleet.urls():
        try:
            text = fleet.replica(url).metrics()
        except ReplicaUnavailable:
            continue
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "http_requests_total" and sample.labels.get("handler") in _HANDLERS:
                    requests += sample.value
                    if sample.labels.get("status", "").startswith(("4", "5")):
                        errors += sample.value
                elif sample.name == "vllm:e2e_request_latency_seconds_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return WatchSnapshot(requests=requests, errors=errors, latency_buckets=tuple(sorted(buckets.items())))

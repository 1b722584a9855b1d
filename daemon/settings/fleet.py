"""The vLLM serving fleet: replicas, rollouts (canary, waves), routing, and the post-deploy watch."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from taoflow.daemon.settings.base import Section

__all__ = ["FleetSettings", "ShadowSettings", "WatchSettings"]


class WatchSettings(Section):
    """After a deploy: watch the fleet and roll back to `previous` when a threshold is crossed."""

    window_seconds: float = Field(900.0, ge=0)
    """How long a new champion is watched after it reaches every replica (0: not watched)."""
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0)
    """Share of OpenAI-endpoint answers that may be 4xx/5xx (summed over replicas) before rolling back."""
    max_p99_latency_seconds: float | None = Field(None, gt=0)
    """If set, roll back when the p99 end-to-end latency since the deploy (vLLM's histogram) exceeds this."""
    max_score_drop: float = Field(0.1, ge=0.0, le=1.0)
    """Roll back when the mean score of live responses logged since the deploy falls this far below before."""
    min_requests: int = Field(20, ge=1)
    """Requests needed before error rate and latency are judged."""
    min_scores: int = Field(20, ge=1)
    """Scored live responses needed (after and before the deploy) before the score is judged."""


class ShadowSettings(Section):
    """Before a gated adapter serves anyone: gateways mirror live requests for the stable name to it, never return
    its answers, and send the daemon each pair (the champion's answer, the candidate's, same request); the daemon
    scores the pairs with the gate's scorers and decides with the gate's statistics. Needs `routing: gateway`."""

    enabled: bool = False
    """Shadow every promote deploy between the canary's load and its smoke evaluation."""
    rate: float = Field(0.1, gt=0.0, le=1.0)
    """Share of the stable name's requests each gateway mirrors to the candidate (sampled by request id)."""
    max_concurrent: int = Field(1, ge=1)
    """Mirrored requests in flight at once per gateway; a request past it is not mirrored (counted). The candidate
    shares the replicas' compute: 1 left clients' latency as it was on CPU replicas, 4 did not (bench/shadow.py)."""
    max_share: float = Field(0.5, gt=0.0, le=1.0)
    """Mirrored requests may be at most this share of what a gateway has in flight on the replicas (client
    requests and mirrors): shadow traffic never takes more of the replicas' capacity (counted when it would)."""
    min_pairs: int = Field(50, ge=1)
    """Scored pairs after which the daemon decides."""
    max_pairs: int = Field(500, ge=1)
    """Pairs kept per deploy; gateways' later pairs are refused (counted)."""
    max_minutes: float = Field(30.0, gt=0)
    """The longest a shadow runs; then the daemon decides on what it has, or extends once when it has fewer than
    min_pairs."""
    extend: bool = True
    """Extend a shadow once (another max_minutes) when it has fewer than min_pairs at its deadline; without it, or
    after it, too few pairs reject the candidate (the fleet's fault: it stays gated for another try)."""
    min_improvement: float = 0.0
    """The candidate's mean score on the pairs must beat the champion's by this (beyond noise at gate.confidence;
    gate.max_slice_regression bounds each task); below 0 tolerates a small loss."""
    max_tokens: int = Field(512, ge=1)
    """Cap on a mirrored request's max_tokens (a client's larger ask is lowered for the mirror only)."""
    timeout_seconds: float = Field(120.0, gt=0)
    """A mirrored request that takes longer is abandoned (counted)."""


class FleetSettings(Section):
    """The vLLM servers that serve the adapters (runtime LoRA API; VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."""

    replicas: list[str] = Field(default_factory=list)
    """Base URLs of vLLM servers, e.g. http://vllm-0.vllm:8000 (empty, with no dns_name: no fleet)."""
    dns_name: str | None = None
    """A headless service name whose addresses are the replicas; re-resolved on every reconcile."""
    port: int = Field(8000, ge=1, le=65535)
    """Port of the replicas found through dns_name."""
    api_key: SecretStr | None = None
    """The servers' --api-key, if set (TAOFLOW_FLEET__API_KEY from a secret)."""
    stage_dir: Path | None = None
    """A volume shared with the servers: versions are copied here before a load (needed with an S3 store)."""
    adapter_root_on_servers: Path | None = None
    """Where the servers mount stage_dir (or the local store); unset: the same path as here."""
    max_lora_rank: int = Field(16, ge=1)
    """The servers' --max-lora-rank: adapters of a higher rank are refused before any replica sees them."""
    canary_replicas: int = Field(1, ge=1)
    """Replicas that get a new adapter first and serve the smoke evaluation."""
    batch_size: int = Field(1, ge=1)
    """Replicas switched together after the canary."""
    max_unavailable: int = Field(0, ge=0)
    """Unreachable replicas a rollout may skip (the reconciler brings them up later); more reverts the deploy."""
    smoke_prompts: int = Field(16, ge=0)
    """Held-out prompts evaluated through the canary (new version vs the live one, gate scorers); 0 skips."""
    smoke_max_regression: float = Field(0.05, ge=0.0)
    """The canary's mean score may fall at most this far below the live adapter's."""
    reconcile_interval_seconds: float = Field(30.0, gt=0)
    """How often replicas are compared with the registry's champion and repaired."""
    unreachable_alert_after: int = Field(3, ge=1)
    """Consecutive failed reconciles after which a replica is reported unreachable."""
    auto_deploy: bool = True
    """Roll out every adapter that passes the gate (rounds then leave promotion to the deploy)."""
    deploy_attempts: int = Field(3, ge=1)
    """auto_deploy: promote deploys an adapter gets in all when the fleet's fault reverted them (a replica that
    did not answer, not the adapter): the next starts once every replica answers a reconcile again."""
    request_timeout_seconds: float = Field(10.0, gt=0)
    """Timeout of the LoRA and metrics calls."""
    retries: int = Field(3, ge=1)
    """Attempts per replica call before it counts as unreachable."""
    generate_concurrency: int = Field(8, ge=1)
    """Concurrent requests of the fleet generation backend (generate.backend: fleet)."""
    routing: Literal["direct", "gateway"] = "direct"
    """How clients reach a new version. `gateway`: each version is loaded under its own name and `taoflow
    gateway` maps the stable name to it (shifted by weight, the old one drained, then unloaded: no failed
    request). `direct`: clients call the replicas; the stable name is unloaded and loaded again (a window of
    milliseconds in which a request for it gets a 404)."""
    canary_weight: float = Field(0.1, ge=0.0, le=1.0)
    """gateway routing: share of the stable name's traffic sent to the new version while the rest of the
    fleet loads it (after the canary's smoke evaluation)."""
    drain_timeout_seconds: float = Field(300.0, ge=0)
    """gateway routing: longest wait for gateways to finish the old version's requests before it is unloaded."""
    gateway_stale_seconds: float = Field(30.0, gt=0)
    """A gateway that has not reported for this long is taken as gone (not waited for when draining)."""
    watch: WatchSettings = WatchSettings()
    """The post-deploy watch."""
    shadow: ShadowSettings = ShadowSettings()
    """Shadow deploys: the candidate judged on mirrored live traffic before it serves anyone."""

    @model_validator(mode="after")
    def _shadow_needs_gateways(self) -> FleetSettings:
        if self.shadow.enabled and self.routing != "gateway":
            raise ValueError("fleet.shadow.enabled needs fleet.routing: gateway (the gateways mirror the requests)")
        return self

    @property
    def configured(self) -> bool:
        """Whether there is a fleet at all (replicas listed or a DNS name to find them)."""
        return bool(self.replicas or self.dns_name)

"""The long-running service: its admin API and tokens, supervision, single-flight rounds."""

from __future__ import annotations

from pydantic import Field

from taoflow.daemon.settings.base import Section, TokenSource

__all__ = ["DaemonSettings"]


class DaemonSettings(Section):
    """The long-running service: admin API, supervision, single-flight rounds."""

    admin_host: str = "127.0.0.1"
    """Address the admin API listens on (0.0.0.0 in a pod)."""
    admin_port: int = Field(8470, ge=0, le=65535)
    """Port of the admin API (also serves /metrics, /healthz, /readyz); 0 picks a free one."""
    admin_token: TokenSource = TokenSource()
    """Bearer token for the admin API (TAOFLOW_DAEMON__ADMIN_TOKEN, or admin_token.file); required by `run`."""
    metrics_token: TokenSource = TokenSource()
    """A read-only token that may only GET /metrics (for the scraper; TAOFLOW_DAEMON__METRICS_TOKEN or a file)."""
    gateway_token: TokenSource = TokenSource()
    """A token that may only read the route table and report in-flight requests (what `taoflow gateway` holds;
    TAOFLOW_DAEMON__GATEWAY_TOKEN or a file); the gateway presents it, the daemon accepts it on /v1/routes."""
    admin_url: str | None = None
    """Where `taoflow status|pause|resume|trigger` reach the daemon; default http://admin_host:admin_port."""
    round_timeout_seconds: float | None = Field(43200.0, gt=0)
    """A round still running after this long is stopped at its next checkpoint (resumed, then failed if it keeps on)."""
    drain_seconds: float = Field(60.0, ge=0)
    """On SIGTERM: how long a running round may take to stop at its next checkpoint before it is killed."""
    lock_stale_seconds: float = Field(120.0, gt=0)
    """A round lock whose holder has not renewed it for this long (or whose process is gone) is taken over."""
    max_restarts: int = Field(5, ge=0)
    """A supervised task failing more often than this within restart_window_seconds stops the daemon (exit 1)."""
    restart_window_seconds: float = Field(300.0, gt=0)
    """Window for max_restarts."""
    restart_backoff_seconds: float = Field(1.0, ge=0)
    """First wait before restarting a failed task; doubles with each failure in the window."""
    max_retry_seconds: float = Field(60.0, gt=0)
    """Longest wait between attempts while a broker or bucket is unreachable (outages are retried until they end)."""

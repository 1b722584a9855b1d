"""The tokens taoflow holds, each read through one `TokenSource` (inline or from a mounted file, never logged)."""

from __future__ import annotations

from taoflow.connectors.errors import ConfigurationError
from taoflow.daemon.settings.base import MIN_TOKEN_LENGTH
from taoflow.daemon.settings.root import Settings

__all__ = ["admin_token", "gateway_api_keys", "gateway_token", "metrics_token", "ray_token", "sample_key"]


def admin_token(settings: Settings) -> str:
    """The admin API's bearer token (daemon.admin_token); required."""
    token = settings.daemon.admin_token.read("daemon.admin_token", what="admin")
    if token is None:
        raise ConfigurationError(
            "the admin API needs a token: set TAOFLOW_DAEMON__ADMIN_TOKEN or daemon.admin_token.file (a mounted secret)"
        )
    return token


def metrics_token(settings: Settings) -> str | None:
    """The read-only token that may only GET /metrics (what a scraper holds), if one is set."""
    return settings.daemon.metrics_token.read("daemon.metrics_token", what="metrics")


def gateway_token(settings: Settings) -> str | None:
    """The token that may only read routes and report (what `taoflow gateway` presents), if one is set."""
    return settings.daemon.gateway_token.read("daemon.gateway_token", what="gateway")


def ray_token(settings: Settings) -> str | None:
    """The Ray cluster's token (ray.token), if one is set."""
    return settings.ray.token.read("ray.token", what="Ray")


def gateway_api_keys(settings: Settings) -> tuple[str, ...]:
    """The keys `taoflow gateway`'s clients present (gateway.api_keys: one per line, or comma-separated); none set:
    ()."""
    text = settings.gateway.api_keys.read("gateway.api_keys", what="client")
    if text is None:
        return ()
    keys = tuple(dict.fromkeys(k.strip() for line in text.splitlines() for k in line.split(",") if k.strip()))
    short = [k for k in keys if len(k) < MIN_TOKEN_LENGTH]
    if short:
        raise ConfigurationError(
            f"gateway.api_keys holds {len(short)} key(s) under {MIN_TOKEN_LENGTH} characters; use longer ones"
            " (openssl rand -hex 32)"
        )
    return keys


def sample_key(settings: Settings) -> bytes:
    """Sampling's secret (ingest.sample_key), b"" when none is set."""
    key = settings.ingest.sample_key.read("ingest.sample_key", what="sampling")
    return key.encode() if key else b""

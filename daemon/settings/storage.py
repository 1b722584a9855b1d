"""Where taoflow keeps its state: the database, the adapters, and what the database lets go of."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from taoflow.daemon.settings.base import ObjectStoreLocation, Section

__all__ = ["RetentionSettings", "StorageSettings"]


class RetentionSettings(Section):
    """What the state database lets go of (store/retention.py), so its file stays bounded under a steady stream."""

    consumed_days: float | None = Field(30.0, gt=0)
    """Prompts rounds consumed longer ago lose their text (request id, hash, task and round stay); unset: kept."""
    dead_letter_days: float | None = Field(30.0, gt=0)
    """Dead letters older than this are deleted; unset: kept."""
    dead_letter_max: int | None = Field(100_000, ge=0)
    """Most dead letters kept (the oldest go first); unset: no cap."""
    interval_seconds: float = Field(600.0, gt=0)
    """How often the daemon applies retention (and gives freed pages back to the file system)."""


class StorageSettings(Section):
    state_dir: Path = Path(".taoflow")
    """Directory for the buffer/registry database, adapters and round work files."""
    database: str = "taoflow.db"
    """SQLite file name inside state_dir (WAL mode; holds prompts, dead letters, registry, rounds)."""
    artifacts: ObjectStoreLocation = ObjectStoreLocation()
    """Adapter store: no uri keeps adapters in state_dir/adapters; `s3://bucket/prefix` keeps them in S3."""
    retention: RetentionSettings = RetentionSettings()
    """What the database lets go of over time."""

    @field_validator("artifacts")
    @classmethod
    def _artifacts_on_s3(cls, value: ObjectStoreLocation) -> ObjectStoreLocation:
        if value.uri is not None and not value.on_s3:
            raise ValueError("storage.artifacts.uri must be s3://bucket/prefix (unset: adapters stay in state_dir)")
        return value

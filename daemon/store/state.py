"""The durable state of one installation, opened from the settings: database, buffer, registry, artifacts."""

from __future__ import annotations

from taoflow.connectors.artifacts.local import LocalArtifactStore
from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.protocols import ArtifactStore
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.registry import Registry
from taoflow.daemon.store.storage import Database

__all__ = ["State", "build_artifact_store", "open_existing_state", "open_state"]


class State:
    """The durable state of one taoflow installation: database, buffer, registry, artifacts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        root = settings.storage.state_dir
        self.db = Database(root / settings.storage.database)
        i = settings.ingest
        self.buffer = PromptBuffer(
            self.db,
            heldout_fraction=i.heldout_fraction,
            heldout_max_per_task=i.heldout_max_per_task,
            cap=i.buffer_cap,
            overflow=i.overflow,
            quotas=i.task_quotas,
        )
        self.registry = Registry(self.db)
        self.store = build_artifact_store(settings)
        self.rounds_dir = root / "rounds"

    def close(self) -> None:
        self.db.close()


def build_artifact_store(settings: Settings) -> ArtifactStore:
    """Adapters on local disk (or a shared volume) by default, in S3 when storage.artifacts.uri says so."""
    s = settings.storage
    if s.artifacts.uri is None:
        return LocalArtifactStore(s.state_dir / "adapters")
    from taoflow.connectors.artifacts.s3 import S3ArtifactStore

    bucket, prefix = s.artifacts.bucket_and_prefix()
    return S3ArtifactStore(
        bucket, prefix, s.state_dir / "adapter-cache", endpoint_url=s.artifacts.endpoint_url, region=s.artifacts.region
    )


def open_state(settings: Settings) -> State:
    return State(settings)


def open_existing_state(settings: Settings) -> State:
    """The state a command reads: refused (not created empty) where there is none, naming where it looked."""
    path = settings.storage.state_dir / settings.storage.database
    if not path.exists():
        raise ConfigurationError(
            f"no taoflow state at {path}: pass the --config of the installation (or --state-dir), "
            "or run from the directory that holds its taoflow.yaml"
        )
    return State(settings)

"""Where rounds run (`round.runner`), and the Ray cluster of `round.runner: ray`: its Jobs API, the exchange both
sides read, and what each stage takes of the cluster (`ray.generation`, `ray.score`, `ray.train`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from taoflow.daemon.settings.base import ObjectStoreLocation, Section, TokenSource

__all__ = ["RayGenerationSettings", "RayScoreSettings", "RaySettings", "RayTrainSettings", "RoundSettings"]


class RayGenerationSettings(Section):
    """The actors that sample candidates (and the task that runs the gate's evaluation)."""

    actors: int = Field(1, ge=1)
    """Actors holding the generation model (Ray Data map_batches); each loads the model once."""
    cpus: float = Field(1.0, ge=0)
    """CPUs each generation actor (and the gate's evaluation) takes."""
    gpus: float = Field(0.0, ge=0)
    """GPUs each generation actor (and the gate's evaluation) takes."""
    batch: int = Field(64, ge=1)
    """Prompts per generation batch (each batch sampled with its own seed)."""


class RayScoreSettings(Section):
    """The CPU actors that score candidates."""

    actors: int = Field(1, ge=1)
    """CPU actors scoring candidates (each holds the task's scorers and their sandbox)."""
    batch: int = Field(256, ge=1)
    """Prompts per scoring batch."""


class RayTrainSettings(Section):
    """The Ray Train workers."""

    workers: int = Field(1, ge=1)
    """Ray Train workers (data parallel; one per GPU on a GPU cluster)."""
    cpus: float = Field(1.0, ge=0)
    """CPUs each training worker takes."""
    gpus: float = Field(0.0, ge=0)
    """GPUs each training worker takes (1 on a GPU cluster)."""


class RaySettings(Section):
    """Where `round.runner: ray` sends rounds: an existing Ray cluster's Jobs API and the exchange both sides read."""

    address: str | None = Field(None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    """The cluster's dashboard (Jobs REST API), e.g. http://raycluster-head-svc:8265."""
    token: TokenSource = TokenSource()
    """The cluster's token (its RAY_AUTH_MODE=token; TAOFLOW_RAY__TOKEN, or a file), sent as a bearer token; never
    logged."""
    exchange: ObjectStoreLocation = ObjectStoreLocation()
    """Where a round's inputs and outputs travel (prompts and candidates as Parquet, adapters as files):
    `s3://bucket/prefix`, or an absolute path both sides mount. Credentials: each side's own AWS chain."""
    python: str = Field("python", pattern=r"^[A-Za-z0-9_./-]+$")
    """The interpreter that runs the round's job on the cluster (taoflow and ray installed there)."""
    placement_timeout_seconds: float = Field(600.0, gt=0)
    """A job the cluster does not start, or a stage it cannot place (too few CPUs or GPUs), waits for ever in Ray:
    after this long the round fails with that reason."""
    poll_seconds: float = Field(2.0, gt=0)
    """How often the round asks the Jobs API for its job's status and new log lines."""
    generation: RayGenerationSettings = RayGenerationSettings()
    """The generation stage's actors."""
    score: RayScoreSettings = RayScoreSettings()
    """The scoring stage's actors."""
    train: RayTrainSettings = RayTrainSettings()
    """The training stage's workers."""
    max_failures: int = Field(3, ge=0)
    """Times training restarts from its last checkpoint after losing a worker or node before the round fails."""


class RoundSettings(Section):
    """Where rounds run."""

    runner: Literal["local", "ray"] = "local"
    """`local`: a child process of the daemon on its machine; `ray`: the round's generation, scoring, training and
    gate evaluation run as one job on a Ray cluster (`ray.*`), the daemon recording it as for a local round."""

"""The composition root: builds the parts whose choice spans rooms (a generation backend, a whole round).

Only the command line (and benchmarks) import this module; the rooms receive what it builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.protocols import Generator
from taoflow.daemon.round.local_stages import LocalStages
from taoflow.daemon.round.parts import build_gate_scorers, build_local_generator, build_scorers
from taoflow.daemon.round.ray_stages import RayStages
from taoflow.daemon.round.recipe import TaoRound
from taoflow.daemon.round.stages import ProgressFactory, Stages, no_progress
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.state import State, build_artifact_store

__all__ = ["build_generator", "build_round", "build_stages"]


def build_generator(settings: Settings, model_dir: Path) -> Generator:
    """The generation backend; imports torch (or vLLM) only when called."""
    if settings.generate.backend == "fleet":
        from taoflow.connectors.generation.fleet import FleetGenerator
        from taoflow.daemon.fleet.replicas import Fleet

        fleet = Fleet(settings.fleet, build_artifact_store(settings))
        urls = fleet.urls() if settings.fleet.configured else []
        if not urls:
            raise ConfigurationError("generate.backend is 'fleet' but fleet.replicas / fleet.dns_name name no replica")
        return FleetGenerator(
            [fleet.replica(u) for u in urls],
            concurrency=settings.fleet.generate_concurrency,
            path_on_servers=lambda adapter: fleet.server_path(adapter.name),
        )
    return build_local_generator(settings, model_dir)


def build_round(
    settings: Settings,
    state: State,
    *,
    progress: ProgressFactory = no_progress,
    auto_promote: bool = True,
    tasks: Sequence[str] = (),
    max_prompts: int | None = None,
) -> TaoRound:
    """The round with the runner, scorers and generation backend that the settings name."""
    return TaoRound(
        settings,
        state,
        stages=build_stages(settings, state, progress=progress),
        auto_promote=auto_promote,
        tasks=tasks,
        max_prompts=max_prompts,
    )


def build_stages(settings: Settings, state: State, *, progress: ProgressFactory = no_progress) -> Stages:
    """A round's stages where `round.runner` says: in the round's process, or as a job on a Ray cluster."""
    if settings.round.runner == "ray":
        return RayStages(settings, state)
    return LocalStages(
        settings,
        state,
        scorers=build_scorers(settings),
        gate_scorers=build_gate_scorers(settings),
        generator_factory=lambda path: build_generator(settings, path),
        progress=progress,
    )

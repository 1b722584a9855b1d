"""The composition root: builds the parts whose choice spans rooms (a generation backend, a whole round).

Only the command line (and benchmarks) import this module; the rooms receive what it builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.protocols import Generator
from taoflow.daemon.round.parts import build_gate_scorers, build_scorers
from taoflow.daemon.round.recipe import ProgressFactory, TaoRound, no_progress
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.state import State, build_artifact_store

__all__ = ["build_generator", "build_round"]


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
    if settings.generate.backend == "vllm":
        from taoflow.connectors.generation.vllm import VllmGenerator

        if settings.model.device.startswith("cuda:") and settings.model.device != "cuda:0":
            raise ConfigurationError(
                f"generate.backend vllm uses the GPUs this process sees, not model.device {settings.model.device!r}; "
                "choose them with CUDA_VISIBLE_DEVICES (and generate.vllm.tensor_parallel_size)"
            )
        engine = settings.generate.vllm
        return VllmGenerator(
            model_dir,
            max_lora_rank=engine.max_lora_rank or settings.train.lora_rank,
            seed=settings.generate.seed,
            dtype=settings.model.dtype,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            tensor_parallel_size=engine.tensor_parallel_size,
            max_model_len=engine.max_model_len,
            enable_prefix_caching=engine.enable_prefix_caching,
            enforce_eager=engine.enforce_eager,
        )
    from taoflow.connectors.generation.local import TransformersGenerator
    from taoflow.connectors.generation.placement import resolve_placement

    placement = resolve_placement(settings.model.device, settings.model.dtype)
    return TransformersGenerator(model_dir, batch_rows=settings.generate.batch_rows, placement=placement)


def build_round(
    settings: Settings,
    state: State,
    *,
    progress: ProgressFactory = no_progress,
    auto_promote: bool = True,
    tasks: Sequence[str] = (),
    max_prompts: int | None = None,
) -> TaoRound:
    """The round with the scorers and generation backend that the settings name."""
    return TaoRound(
        settings,
        state,
        scorers=build_scorers(settings),
        gate_scorers=build_gate_scorers(settings),
        generator_factory=lambda path: build_generator(settings, path),
        progress=progress,
        auto_promote=auto_promote,
        tasks=tasks,
        max_prompts=max_prompts,
    )

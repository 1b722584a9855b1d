"""The round's parts named by the settings: scorers per task, the base model, the training and gate configurations."""

from __future__ import annotations

from collections.abc import Mapping

from taoflow.connectors.generation.base_model import ResolvedModel, resolve_base_model
from taoflow.connectors.scoring.composite import CompositeScorer, build_scorer
from taoflow.connectors.scoring.sandbox import SandboxedScorer, SandboxLimits
from taoflow.connectors.training.lora import TrainingConfig
from taoflow.daemon.settings import SandboxSettings, ScorerSpec, Settings
from taoflow.policies.gate import GatePolicy

__all__ = ["TaskScorers", "build_gate_scorers", "build_scorers", "gate_policy", "resolve_model", "training_config"]


class TaskScorers:
    """A scorer per task, built lazily from the `score` settings: confined in a worker process (the default) or
    in this process when `score.sandbox.enabled` is off."""

    def __init__(
        self,
        tasks: Mapping[str, list[ScorerSpec]],
        default: list[ScorerSpec],
        *,
        sandbox: SandboxSettings | None = None,
    ) -> None:
        self._specs = dict(tasks)
        self._default = default
        self._sandbox = sandbox if sandbox is not None else SandboxSettings()
        self._built: dict[str, TaskScorer] = {}
        for specs in [*self._specs.values(), default]:
            _composite(specs)  # construct once now: a bad scorer config fails at start-up

    def for_task(self, task: str) -> TaskScorer:
        if task not in self._built:
            self._built[task] = self._build(self._specs.get(task, self._default))
        return self._built[task]

    def all(self) -> dict[str, TaskScorer]:
        return dict(self._built)

    def close(self) -> None:
        for scorer in self._built.values():
            if isinstance(scorer, SandboxedScorer):
                scorer.close()

    def _build(self, specs: list[ScorerSpec]) -> TaskScorer:
        if not self._sandbox.enabled:
            return _composite(specs)
        limits = SandboxLimits(
            seconds_per_candidate=self._sandbox.seconds_per_candidate, memory_mb=self._sandbox.memory_mb
        )
        return SandboxedScorer([(s.type, dict(s.params), s.weight) for s in specs], limits)


TaskScorer = CompositeScorer | SandboxedScorer


def _composite(specs: list[ScorerSpec]) -> CompositeScorer:
    return CompositeScorer([(build_scorer(s.type, dict(s.params)), s.weight) for s in specs])


def build_scorers(settings: Settings) -> TaskScorers:
    return TaskScorers(settings.score.tasks, settings.score.default, sandbox=settings.score.sandbox)


def build_gate_scorers(settings: Settings) -> TaskScorers | None:
    """The gate's own scorers (`gate.scorers`, the training ones for the other tasks), or None when it has none."""
    if not settings.gate.scorers:
        return None
    tasks = {**settings.score.tasks, **settings.gate.scorers}
    return TaskScorers(tasks, settings.score.default, sandbox=settings.score.sandbox)


def resolve_model(settings: Settings) -> ResolvedModel:
    return resolve_base_model(settings.model.base, cache_dir=settings.model.cache_dir.expanduser())


def training_config(settings: Settings) -> TrainingConfig:
    t = settings.train
    return TrainingConfig(
        objective=t.objective,
        lora_rank=t.lora_rank,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        learning_rate=t.learning_rate,
        epochs=t.epochs,
        batch_size=t.batch_size,
        max_length=t.max_length,
        dpo_beta=t.dpo_beta,
        seed=t.seed,
        save_steps=t.save_steps,
    )


def gate_policy(settings: Settings) -> GatePolicy:
    g = settings.gate
    return GatePolicy(
        min_mean_improvement=g.min_mean_improvement,
        max_slice_regression=g.max_slice_regression,
        min_samples=g.min_samples,
        min_slice_samples=g.min_slice_samples,
        confidence=g.confidence,
        bootstrap_samples=g.bootstrap_samples,
    )

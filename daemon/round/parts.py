"""The round's parts named by the settings: scorers per task, the base model, the training and gate configurations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.generation.base_model import ResolvedModel, resolve_base_model
from taoflow.connectors.generation.placement import Placement, resolve_placement
from taoflow.connectors.generation.templates import chat_template_text, renders_tools
from taoflow.connectors.protocols import Generator, Scorer
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.scoring.composite import IN_PROCESS, CompositeScorer, build_scorer
from taoflow.connectors.scoring.judge import JudgeScorer
from taoflow.connectors.scoring.models import PolicyRef, RewardModelScorer, SelfCertaintyScorer
from taoflow.connectors.scoring.sandbox import SandboxedScorer, SandboxLimits
from taoflow.connectors.training.lora import TrainingConfig
from taoflow.daemon.settings import SandboxSettings, ScorerSpec, Settings
from taoflow.policies.gate import GatePolicy
from taoflow.policies.monitors import MonitorThresholds

__all__ = [
    "TaskScorers",
    "build_gate_scorers",
    "build_local_generator",
    "build_scorers",
    "gate_policy",
    "resolve_model",
    "training_config",
]


class TaskScorers:
    """A scorer per task, built lazily from the `score` settings: verifiers confined in a worker process (the
    default) or in this process when `score.sandbox.enabled` is off; model scorers (judge, reward model,
    self-certainty) always in this process, the judge's verdicts cached under `cache_dir`."""

    def __init__(
        self,
        tasks: Mapping[str, list[ScorerSpec]],
        default: list[ScorerSpec],
        *,
        sandbox: SandboxSettings | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self._specs = dict(tasks)
        self._default = default
        self._sandbox = sandbox if sandbox is not None else SandboxSettings()
        self._cache_dir = cache_dir
        self.policy = PolicyRef()  # the round says which model self_certainty scores with
        self._built: dict[str, TaskScorer] = {}
        for specs in [*self._specs.values(), default]:
            _composite(specs).close()  # construct once now: a bad scorer config fails at start-up

    def for_task(self, task: str) -> TaskScorer:
        if task not in self._built:
            self._built[task] = self._build(self._specs.get(task, self._default))
        return self._built[task]

    def all(self) -> dict[str, TaskScorer]:
        return dict(self._built)

    def judges(self) -> dict[str, dict[str, Any]]:
        """What each task's judge did (calls, tokens, unscored by reason, position means), by task."""
        return {
            task: part.stats.summary()
            for task, scorer in self._built.items()
            for part, _ in _in_process_parts(scorer)
            if isinstance(part, JudgeScorer)
        }

    def use_policy(self, model_dir: Path, adapter: Path | None) -> None:
        self.policy.model_dir, self.policy.adapter = model_dir, adapter

    def prepare(self, records: Sequence[PromptRecord], responses: Sequence[Sequence[str]]) -> None:
        """Show each task's scorers all of its candidates first (the model scorers fit their statistics)."""
        by_task: dict[str, tuple[list[PromptRecord], list[Sequence[str]]]] = {}
        for record, answers in zip(records, responses, strict=True):
            rows = by_task.setdefault(record.task, ([], []))
            rows[0].append(record)
            rows[1].append(answers)
        for task, (task_records, task_answers) in by_task.items():
            scorer = self.for_task(task)
            if isinstance(scorer, CompositeScorer):
                scorer.prepare(task, task_records, task_answers)

    def normalisation(self) -> dict[str, dict[str, Any]]:
        """The model scorers' per-task statistics, by task and scorer, to store with the round."""
        return {
            task: {part.name: part.scores.normaliser.summary().get(task, {})}
            for task, part in self._model_parts()
            if task in part.scores.normaliser.stats
        }

    def restore(self, saved: dict[str, dict[str, Any]]) -> None:
        """Statistics a round stored (a resumed gate scores as its score step did)."""
        for task in saved:
            self.for_task(task)
        for task, part in self._model_parts():
            if part.name in saved.get(task, {}):
                part.scores.normaliser.restore({task: saved[task][part.name]})

    def _model_parts(self) -> list[tuple[str, RewardModelScorer | SelfCertaintyScorer]]:
        return [
            (task, part)
            for task, scorer in self._built.items()
            for part, _ in _in_process_parts(scorer)
            if isinstance(part, RewardModelScorer | SelfCertaintyScorer)
        ]

    def close(self) -> None:
        for scorer in self._built.values():
            scorer.close()

    def _build(self, specs: list[ScorerSpec]) -> TaskScorer:
        confined = [s for s in specs if s.type not in IN_PROCESS]
        if not self._sandbox.enabled or not confined:
            return _composite(specs, cache_dir=self._cache_dir, policy=self.policy)
        limits = SandboxLimits(
            seconds_per_candidate=self._sandbox.seconds_per_candidate,
            memory_mb=self._sandbox.memory_mb,
            startup_seconds=self._sandbox.startup_seconds,
        )
        sandboxed = SandboxedScorer([(s.type, dict(s.params), s.weight) for s in confined], limits)
        in_process = [s for s in specs if s.type in IN_PROCESS]
        if not in_process:
            return sandboxed
        # The confined verifiers' weighted mean counts with their total weight beside each in-process scorer.
        return CompositeScorer(
            [
                (sandboxed, sum(s.weight for s in confined)),
                *_parts(in_process, cache_dir=self._cache_dir, policy=self.policy),
            ]
        )


TaskScorer = CompositeScorer | SandboxedScorer


def _in_process_parts(scorer: TaskScorer) -> list[tuple[Scorer, float]]:
    """The scorers a task's scorer runs in this process (a sandboxed one runs its own elsewhere)."""
    return scorer.parts if isinstance(scorer, CompositeScorer) else []


def _parts(
    specs: list[ScorerSpec], *, cache_dir: Path | None = None, policy: PolicyRef | None = None
) -> list[tuple[Scorer, float]]:
    parts = []
    for s in specs:
        params = dict(s.params)
        if s.type == "judge" and cache_dir is not None:
            params.setdefault("cache_dir", str(cache_dir))
        if s.type == "self_certainty" and policy is not None:
            params["policy"] = policy
        parts.append((build_scorer(s.type, params), s.weight))
    return parts


def _composite(
    specs: list[ScorerSpec], *, cache_dir: Path | None = None, policy: PolicyRef | None = None
) -> CompositeScorer:
    return CompositeScorer(_parts(specs, cache_dir=cache_dir, policy=policy))


def build_scorers(settings: Settings) -> TaskScorers:
    return TaskScorers(
        settings.score.tasks, settings.score.default, sandbox=settings.score.sandbox, cache_dir=_judge_cache(settings)
    )


def build_gate_scorers(settings: Settings) -> TaskScorers | None:
    """The gate's own scorers (`gate.scorers`, the training ones for the other tasks), or None when it has none."""
    if not settings.gate.scorers:
        return None
    tasks = {**settings.score.tasks, **settings.gate.scorers}
    return TaskScorers(tasks, settings.score.default, sandbox=settings.score.sandbox, cache_dir=_judge_cache(settings))


def _judge_cache(settings: Settings) -> Path:
    return settings.storage.state_dir / "judge-cache"


def check_tool_template(settings: Settings, model_dir: Path) -> None:
    """With `model.tool_call_parser` set, the chat template must show the model its tools: a template that drops
    them would train tool prompts on answers to a prompt without tools. Fails the round early, saying what to set."""
    if settings.model.tool_call_parser == "none":
        return
    from taoflow.connectors.generation.local import load_tokenizer

    if not renders_tools(load_tokenizer(model_dir), chat_template_text(settings.model.chat_template)):
        raise ConfigurationError(
            f"model.tool_call_parser is {settings.model.tool_call_parser!r} but the chat template "
            f"({settings.model.chat_template or 'the model' + chr(39) + 's own'}) does not render tools, so tool "
            "prompts cannot be learned from; set model.chat_template to a template that does (`chatml-tools` for "
            "ChatML models such as the built-in SmolLM2), or model.tool_call_parser: none"
        )


def build_local_generator(settings: Settings, model_dir: Path) -> Generator:
    """The generation backend that runs in this process (transformers or vLLM's engine); imports torch (or vLLM)
    only when called. The fleet backend is built by `wiring`."""
    check_tool_template(settings, model_dir)
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
            chat_template=chat_template_text(settings.model.chat_template),
        )
    from taoflow.connectors.generation.local import TransformersGenerator

    placement = resolve_placement(settings.model.device, settings.model.dtype)
    return TransformersGenerator(
        model_dir,
        batch_rows=settings.generate.batch_rows,
        placement=placement,
        chat_template=chat_template_text(settings.model.chat_template),
    )


def resolve_model(settings: Settings) -> ResolvedModel:
    return resolve_base_model(settings.model.base, cache_dir=settings.model.cache_dir.expanduser())


def training_config(settings: Settings, placement: Placement | None = None) -> TrainingConfig:
    """`placement`: where training runs (None: the CPU in float32, what tools without a round use)."""
    t = settings.train
    placement = placement or Placement("cpu", "float32")
    return TrainingConfig(
        objective=t.objective,
        lora_rank=t.lora_rank,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        learning_rate=t.learning_rate,
        epochs=t.epochs,
        batch_size=t.batch_size,
        max_length=t.max_length,
        dpo_beta=t.dpo.beta,
        seed=t.seed,
        save_steps=t.save_steps,
        grpo_generations=t.grpo.generations,
        grpo_max_completion_tokens=t.grpo.max_completion_tokens,
        grpo_temperature=t.grpo.temperature,
        grpo_beta=t.grpo.beta,
        gradient_accumulation=t.gradient_accumulation,
        gradient_checkpointing=t.gradient_checkpointing,
        device=placement.device,
        dtype=placement.dtype,
        chat_template=chat_template_text(settings.model.chat_template),
    )


def monitor_thresholds(settings: Settings) -> MonitorThresholds:
    m = settings.gate.monitors
    return MonitorThresholds(
        max_length_ratio=m.max_length_ratio,
        max_refusal_increase=m.max_refusal_increase,
        max_scorer_divergence=m.max_scorer_divergence,
        max_position_bias=m.max_position_bias,
        min_answers=m.min_answers,
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

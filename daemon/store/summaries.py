"""What a round records of each step, typed: the shapes every other room reads (the CLI's tables, `/metrics`, the
flywheel, the adapter manifest) instead of keys looked up by string.

A round's summary is stored as one JSON object, a key per completed step (`{"generate": {...}, "score": {...}}`);
a skipped round's step holds `{"skipped": reason, ...}`. Rows written by older versions read as they are: fields
they lack take their defaults, keys nobody reads any more are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict

__all__ = [
    "STEPS",
    "BaseModelRef",
    "DoneSummary",
    "GateSummary",
    "GenerateSummary",
    "MonitorSummary",
    "NoiseSummary",
    "PrepareSummary",
    "RegisterSummary",
    "RetriedSummary",
    "RoundSummary",
    "SamplingSummary",
    "ScoreSummary",
    "SkipSummary",
    "SliceSummary",
    "StepSummary",
    "TaskScores",
    "TrainSummary",
]

#: A round's steps in order ("pending": none completed yet).
STEPS: tuple[str, ...] = ("pending", "prepare", "generate", "score", "train", "register", "gate", "done")


class _Summary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    seconds: float = 0.0
    """How long the step took (the recipe's clock)."""

    def timed(self, seconds: float) -> Self:
        return self.model_copy(update={"seconds": round(seconds, 2)})


class PrepareSummary(_Summary):
    prompts: int
    tasks: dict[str, int] = {}
    champion: str | None = None


class SamplingSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    n: int
    temperature: float
    top_p: float = 1.0
    max_new_tokens: int
    seed: int | None = None


class RetriedSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    prompts: int = 0
    n: int = 0


class GenerateSummary(_Summary):
    candidates: int
    tokens: int = 0
    tokens_per_second: float = 0.0
    backend: str = "transformers"
    device: str | None = None  # where candidates were sampled ("fleet" for the serving fleet; None on a cluster)
    sampling: SamplingSummary | None = None
    retried: RetriedSummary = RetriedSummary()
    runner: Literal["local", "ray"] = "local"
    job: str | None = None  # the Ray job's submission id


class TaskScores(BaseModel):
    """A task's candidates as the score step saw them."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    prompts: int
    candidates: int
    unscored: int = 0
    mean: float | None = None
    best_median: float | None = None
    best_max: float | None = None
    pass_rate: float | None = None
    prompts_with_target: int = 0
    score_kind: str | None = None  # binary, graded, continuous or none (policies/selection.py: score_shape)
    score_levels: list[float] = []  # the distinct scores, when there are at most 6
    flat_prompts: int = 0  # prompts whose candidates all scored alike
    other_selection_keeps: int | None = None  # prompts the other train.selection would learn from (SFT, DPO)
    selection: str | None = None  # the mode the task's prompts were selected by (train.selection auto decides)
    selection_reason: str = ""  # why, when auto decided it


class ScoreSummary(_Summary):
    tasks: dict[str, TaskScores] = {}
    examples: int = 0
    judges: dict[str, dict[str, Any]] = {}  # each task's judge: calls, tokens, unscored by reason (connectors say)
    normalisation: dict[str, dict[str, Any]] = {}  # the model scorers' statistics, by task and scorer
    advice: list[str] = []  # why a task taught little, and what would change it


class BaseModelRef(BaseModel):
    """The base model an adapter was trained on, as the training side resolved it."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    reference: str
    digest: str
    path: str


class TrainSummary(_Summary):
    examples: int
    replayed: int = 0
    too_long: int = 0  # examples left out: longer than train.max_length with their answer
    steps: int = 0
    final_loss: float | None = None
    samples_per_second: float = 0.0
    tokens: int = 0
    train_seconds: float = 0.0
    resumed_from: str | None = None
    init: str = "base"
    device: str = "cpu"
    dtype: str = "float32"
    processes: int = 1
    runner: Literal["local", "ray"] = "local"
    workers: int | None = None  # Ray Train workers
    base: BaseModelRef | None = None


class RegisterSummary(_Summary):
    version: str
    uri: str
    retry: int = 0


class SliceSummary(BaseModel):
    """A task's slice of the gate as the round records it: its means and how many prompts changed."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    task: str
    n: int
    candidate_mean: float
    champion_mean: float
    changed: int | None = None  # None in rows of versions that did not count it
    left_out: int = 0  # prompts either side could not score: out of the comparison


class NoiseSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    confidence: float
    lower: float
    upper: float
    improved: int
    worsened: int
    p_value: float


class UnscoredSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    baseline: int = 0
    candidate: int = 0


class MonitorSummary(BaseModel):
    """What the scorer-gaming monitors read on the gate's answers, and what they blocked (policies/monitors.py)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    answers: int = 0
    length_ratio: float | None = None
    refusal_rate: float | None = None
    champion_refusal_rate: float | None = None
    scorer_divergence: float | None = None
    position_bias: float | None = None
    blocked: list[str] = []


class GateSummary(_Summary):
    passed: bool
    outcome: str = "unknown"
    reason: str = ""
    promoted: bool = False
    against: str = "base"
    slices: list[SliceSummary] = []
    golden: list[SliceSummary] = []
    noise: NoiseSummary | None = None
    unscored: UnscoredSummary = UnscoredSummary()
    training_scorers: list[SliceSummary] | None = None  # the same answers by the training scorers (gate.scorers)
    monitors: MonitorSummary | None = None

    def means(self) -> tuple[float, float] | None:
        """The candidate's and the champion's mean over every held-out prompt (None: none was judged)."""
        total = sum(s.n for s in self.slices)
        if not total:
            return None
        return (
            sum(s.candidate_mean * s.n for s in self.slices) / total,
            sum(s.champion_mean * s.n for s in self.slices) / total,
        )


class DoneSummary(_Summary):
    pass


class SkipSummary(_Summary):
    """The step at which a round found nothing to learn: why, and how many of its prompts stay to be tried again."""

    skipped: str
    retry: int = 0


StepSummary = (
    PrepareSummary | GenerateSummary | ScoreSummary | TrainSummary | RegisterSummary | GateSummary | DoneSummary
)

_STEP_TYPES: dict[str, type[_Summary]] = {
    "prepare": PrepareSummary,
    "generate": GenerateSummary,
    "score": ScoreSummary,
    "train": TrainSummary,
    "register": RegisterSummary,
    "gate": GateSummary,
    "done": DoneSummary,
}


@dataclass(frozen=True)
class RoundSummary:
    """Every step a round has recorded, and where it was skipped (if it was)."""

    prepare: PrepareSummary | None = None
    generate: GenerateSummary | None = None
    score: ScoreSummary | None = None
    train: TrainSummary | None = None
    register: RegisterSummary | None = None
    gate: GateSummary | None = None
    done: DoneSummary | None = None
    skipped_at: str | None = None
    skip: SkipSummary | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundSummary:
        fields: dict[str, Any] = {}
        for step, value in data.items():
            if not isinstance(value, dict) or step not in _STEP_TYPES:
                continue
            if "skipped" in value:
                fields["skipped_at"], fields["skip"] = step, SkipSummary.model_validate(value)
            else:
                fields[step] = _STEP_TYPES[step].model_validate(value)
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for step in _STEP_TYPES:
            summary = getattr(self, step)
            if summary is not None:
                data[step] = summary.model_dump(mode="json")
            if step == self.skipped_at and self.skip is not None:
                data[step] = self.skip.model_dump(mode="json")
        return data

    def with_step(self, step: str, summary: StepSummary | SkipSummary) -> RoundSummary:
        if isinstance(summary, SkipSummary):
            return replace(self, skipped_at=step, skip=summary)
        if not isinstance(summary, _STEP_TYPES[step]):
            raise TypeError(f"step {step} records a {_STEP_TYPES[step].__name__}, not a {type(summary).__name__}")
        changed: dict[str, Any] = {step: summary}
        return replace(self, **changed)

    def seconds(self) -> dict[str, float]:
        """Each recorded step's duration, in step order (a skipped step's too)."""
        out: dict[str, float] = {}
        for step in _STEP_TYPES:
            summary = self.skip if step == self.skipped_at else getattr(self, step)
            if summary is not None:
                out[step] = summary.seconds
        return out

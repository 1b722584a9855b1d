"""A round's stages, written once: the interface every runner implements, and the bodies every runner calls.

The recipe (`recipe.py`) calls each stage once, whatever runs it: `LocalStages` (`local_stages.py`) in the round's
own process, `RayStages` (`ray_stages.py`) as one job on a Ray cluster, whose program (`on_ray.py`) runs on the
cluster. What both need is here, so a change to how a round samples, scores, summarises training or evaluates
the gate reaches every runner (tests/daemon/round/test_stages.py fails when a runner stops calling these):

    generate   candidate_counts, sampling_for, generate_candidates, generation_summary
    score      score_candidates, score_summary
    train      erased_since_taken, training_examples, replay_examples, nothing_to_learn, train_summary
    evaluate   evaluate_gate
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from taoflow.connectors.errors import UnknownVersion
from taoflow.connectors.generation.base_model import ResolvedModel
from taoflow.connectors.generation.placement import Placement
from taoflow.connectors.protocols import Completion, Generator, Progress, SamplingConfig
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.training.lora import TrainingResult
from taoflow.daemon.round import candidates as cand
from taoflow.daemon.round.evaluation import evaluate, rescore
from taoflow.daemon.round.parts import TaskScorers
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.buffer import StoredPrompt
from taoflow.daemon.store.erasure import erased_prompts, erased_request_ids
from taoflow.daemon.store.round_files import GateEvaluations, RoundFiles, ScoredPrompt
from taoflow.daemon.store.rounds import RoundRecord, RoundStore
from taoflow.daemon.store.state import State
from taoflow.daemon.store.summaries import (
    BaseModelRef,
    GenerateSummary,
    RetriedSummary,
    SamplingSummary,
    ScoreSummary,
    TaskScores,
    TrainSummary,
)
from taoflow.policies.selection import ScoredCandidate

__all__ = [
    "STAGE_BODIES",
    "Judged",
    "ProgressFactory",
    "RoundWork",
    "Stages",
    "candidate_counts",
    "erased_since_taken",
    "evaluate_gate",
    "generate_candidates",
    "generation_summary",
    "no_progress",
    "nothing_to_learn",
    "replay_examples",
    "sampling_for",
    "score_candidates",
    "score_summary",
    "train_summary",
    "training_examples",
]

#: (description, total units) -> a callback that advances a progress display.
ProgressFactory = Callable[[str, int], Progress]


def no_progress(description: str, total: int) -> Progress:
    return lambda done: None


#: The bodies each stage is made of: every runner's stage calls each of them (a test holds them to it).
STAGE_BODIES: dict[str, tuple[str, ...]] = {
    "generate": ("candidate_counts", "sampling_for", "generate_candidates", "generation_summary"),
    "score": ("score_candidates", "score_summary"),
    "train": ("erased_since_taken", "training_examples", "replay_examples", "nothing_to_learn", "train_summary"),
    "evaluate": ("evaluate_gate",),
}


@dataclass(frozen=True)
class RoundWork:
    """What every stage of one round works from: the round, its files, its prompts as the buffer holds them now
    (prompts erased since the round took them are gone) and the champion it started from (None: the base)."""

    record: RoundRecord
    prompts: list[StoredPrompt]
    champion: str | None

    @property
    def files(self) -> RoundFiles:
        return self.record.files

    @property
    def records(self) -> list[PromptRecord]:
        return [p.record for p in self.prompts]

    @property
    def seed(self) -> int:
        """The round's sampling seed is the settings' seed plus this (so rounds sample differently)."""
        return self.record.id


@dataclass(frozen=True)
class Judged:
    """The gate's evaluations and the champion both sides were judged against (None: the base model)."""

    against: str | None
    evaluations: GateEvaluations


class Stages(Protocol):
    """A round's heavy stages. Each writes its outputs into the round's files and returns its summary; `train`
    raises NothingToLearn when the candidates gave no example."""

    def generate(self, work: RoundWork) -> GenerateSummary: ...

    def score(self, work: RoundWork) -> ScoreSummary: ...

    def train(self, work: RoundWork) -> TrainSummary: ...

    def evaluate(self, work: RoundWork, version: str) -> Judged: ...


# ---------------------------------------------------------------------- generate
def candidate_counts(settings: Settings, prompts: Sequence[StoredPrompt]) -> list[int]:
    """Candidates per prompt: generate.n, and generate.retry_n (or twice n) for a prompt being tried again."""
    g = settings.generate
    return [g.retry_candidates if p.attempts else g.n for p in prompts]


def sampling_for(settings: Settings, *, seed: int, n: int | None = None) -> SamplingConfig:
    """How candidates are sampled; `seed` is added to generate.seed."""
    g = settings.generate
    return SamplingConfig(
        n=g.n if n is None else n,
        temperature=g.temperature,
        top_p=g.top_p,
        max_new_tokens=g.max_new_tokens,
        seed=g.seed + seed,
    )


def generate_candidates(
    generator: Generator,
    records: Sequence[PromptRecord],
    counts: Sequence[int],
    *,
    settings: Settings,
    seeds: Sequence[int],
    adapter: Path | None,
    progress: Progress | None = None,
) -> list[list[Completion]]:
    """Each prompt's candidates: prompts grouped by how many they get (fewest first), each group sampled with the
    seed of its first prompt (`seeds`: one per prompt, added to generate.seed)."""
    outputs: list[list[Completion]] = [[] for _ in records]
    for n in sorted(set(counts)):
        rows = [i for i, count in enumerate(counts) if count == n]
        sampling = sampling_for(settings, seed=seeds[rows[0]], n=n)
        answers = generator.generate([records[i].chat for i in rows], sampling, adapter=adapter, progress=progress)
        for i, row in zip(rows, answers, strict=True):
            outputs[i] = list(row)
    return outputs


def generation_summary(
    outputs: Sequence[Sequence[Completion]],
    seconds: float,
    *,
    settings: Settings,
    retried: RetriedSummary,
    device: str | None,
    sampling: SamplingConfig | None,
) -> GenerateSummary:
    tokens = sum(c.num_tokens for row in outputs for c in row)
    return GenerateSummary(
        candidates=sum(len(row) for row in outputs),
        tokens=tokens,
        tokens_per_second=round(tokens / seconds, 1) if seconds else 0.0,
        backend=settings.generate.backend,
        device=device,
        sampling=SamplingSummary(**asdict(sampling)) if sampling is not None else None,
        retried=retried,
    )


# ---------------------------------------------------------------------- score
def score_candidates(
    records: Sequence[PromptRecord],
    candidates: dict[str, list[Completion]],
    scorers: TaskScorers,
    *,
    progress: Progress | None = None,
) -> list[ScoredPrompt]:
    """Every prompt's candidates scored by its task's scorers, each task's scorers first shown all of its
    candidates (the model scorers fit their statistics on them)."""
    scorers.prepare(records, [[c.text for c in candidates[r.request_id]] for r in records])
    scored: list[ScoredPrompt] = []
    for record in records:
        row = candidates[record.request_id]
        values = scorers.for_task(record.task).score(record, [c.text for c in row])
        scored.append(
            (record, [ScoredCandidate(c.text, v, c.num_tokens, c.finished) for c, v in zip(row, values, strict=True)])
        )
        if progress is not None:
            progress(1)
    return scored


def score_summary(scored: Sequence[ScoredPrompt], settings: Settings, scorers: TaskScorers | None) -> ScoreSummary:
    """The score step's figures; `scorers` adds what the judges did and the model scorers' statistics (a runner
    that scored elsewhere has none here)."""
    selection = cand.selection_of(settings, scored)
    statistics = cand.score_statistics(scored, selection)
    tasks = {task: TaskScores(**stats) for task, stats in statistics.items()}
    examples = len(cand.training_examples(scored, selection))
    advice = cand.advice(statistics, selection)
    if scorers is None:
        return ScoreSummary(tasks=tasks, examples=examples, advice=advice)
    return ScoreSummary(
        tasks=tasks,
        examples=examples,
        advice=advice,
        judges=scorers.judges(),
        normalisation=scorers.normalisation(),
    )


# ---------------------------------------------------------------------- train
def erased_since_taken(state: State, work: RoundWork, request_ids: Sequence[str]) -> set[str]:
    """The round's prompts erased since it took them (by the buffer ids it took: an erased prompt's row and its
    lines in the round's files are gone), and any of `request_ids` erased: not trained on, recorded as such."""
    return erased_prompts(state.db, work.files.prompts().ids) | erased_request_ids(state.db, request_ids)


def training_examples(scored: Sequence[ScoredPrompt], settings: Settings) -> list[Any]:
    return list(cand.training_examples(scored, cand.selection_of(settings, scored)))


def replay_examples(state: State, settings: Settings, champion: str | None, *, seed: int) -> list[Any]:
    """Up to train.replay examples of the rounds behind the champion (its round's, then its parent's, ...),
    selected from their scored candidates as this round selects, erased prompts left out; a seeded sample
    when there are more."""
    limit = settings.train.replay
    rounds = RoundStore(state.db, state.rounds_dir)
    found: list[Any] = []
    seen: set[str] = set()
    version = champion
    while version is not None and version not in seen and len(found) < limit:
        seen.add(version)
        for work_dir in rounds.work_dirs(version=version):
            files = RoundFiles(work_dir)
            if files.has_scores():
                scored = files.scored()
                gone = erased_request_ids(state.db, [prompt.request_id for prompt, _ in scored])
                found += training_examples([(p, c) for p, c in scored if p.request_id not in gone], settings)
        try:
            version = state.registry.get(version).parent
        except UnknownVersion:
            break
    if len(found) > limit:
        found = random.Random(seed).sample(found, limit)
    return found


def nothing_to_learn(scored: Sequence[ScoredPrompt], settings: Settings, *, erased: int) -> str:
    """Why no example came out of the round, with the figures an operator needs to change that."""
    decided = cand.selection_of(settings, scored)
    s = decided.for_task(scored[0][0].task) if scored else decided
    rule = (
        f"beat their group's mean by {s.relative_margin:g} (floor {s.floor:g})"
        if s.mode == "relative"
        else f"scored at least score_threshold {s.threshold:g}"
    )
    if s.objective == "dpo":
        rule += f" and beat the worst by train.dpo.margin {s.dpo_margin:g}"
    if s.objective == "grpo":
        rule = f"scored differently from another by relative_margin {s.relative_margin:g} (GRPO)"
    tasks = cand.score_statistics(scored, decided)
    figures = "; ".join(
        f"{task}: {t['prompts']} prompts, best scores median {t['best_median']} max {t['best_max']}, "
        f"{t['unscored']}/{t['candidates']} candidates unscored"
        for task, t in tasks.items()
    )
    hints = cand.advice(tasks, decided)
    return (
        f"no candidate of {len(scored)} prompts {rule}: nothing to learn"
        + (f" ({erased} prompts erased meanwhile)" if erased else "")
        + (f"; {figures}" if figures else "")
        + (f"; {'; '.join(hints)}" if hints else "")
    )


def train_summary(
    result: TrainingResult,
    *,
    placement: Placement,
    base: ResolvedModel,
    examples: int,
    replayed: int,
    init: str | None,
    processes: int = 1,
    workers: int | None = None,
) -> TrainSummary:
    """What training did. `processes`: training processes on this machine; `workers`: Ray Train workers (each
    reports its own samples per second: the round's rate is theirs times the workers)."""
    return TrainSummary(
        device=placement.device,
        dtype=placement.dtype,
        processes=processes,
        examples=examples,
        replayed=replayed,
        too_long=result.too_long,
        steps=result.steps,
        final_loss=result.final_loss,
        samples_per_second=round(result.samples_per_second * (workers or 1), 2),
        tokens=result.tokens,
        train_seconds=round(result.seconds, 2),
        resumed_from=result.resumed_from,
        init=init or "base",
        runner="ray" if workers is not None else "local",
        workers=workers,
        base=BaseModelRef(reference=base.reference, digest=base.digest, path=str(base.path)),
    )


# ---------------------------------------------------------------------- evaluate
def evaluate_gate(
    generator: Generator,
    settings: Settings,
    *,
    scorers: TaskScorers,
    gate_scorers: TaskScorers | None,
    heldout: Sequence[PromptRecord],
    golden: Sequence[PromptRecord],
    base_dir: Path,
    champion: Path | None,
    candidate: Path,
    normalisation: dict[str, dict[str, Any]],
    progress: ProgressFactory = no_progress,
) -> GateEvaluations:
    """Both sides of the gate through one generator and one set of scorers: the champion's adapter (None: the base
    model) and the candidate's on the held-out prompts, and on the golden set when there is one. Model scorers
    judge both sides with the champion as policy, the training scorers with the statistics of the score step (the
    gate's own scorers have none: both sides go through the same plain mapping). With scorers of its own, the gate
    also shows what the training scorers say of the same answers."""
    judge = gate_scorers or scorers
    for each in {id(judge): judge, id(scorers): scorers}.values():
        each.use_policy(base_dir, champion)
    scorers.restore(normalisation)
    tokens = settings.gate.max_new_tokens

    def run(records: Sequence[PromptRecord], adapter: Path | None, label: str) -> Any:
        return evaluate(
            generator, records, judge, adapter=adapter, max_new_tokens=tokens, progress=progress(label, len(records))
        )

    baseline = run(heldout, champion, "eval champion" if champion else "eval base")
    judged = run(heldout, candidate, "eval candidate")
    evaluations = GateEvaluations(champion=baseline, candidate=judged)
    if gate_scorers is not None:
        evaluations = replace(
            evaluations,
            candidate_by_training_scorers=rescore(judged, heldout, scorers),
            champion_by_training_scorers=rescore(baseline, heldout, scorers),
        )
    if golden:
        evaluations = replace(
            evaluations,
            golden_candidate=run(golden, candidate, "golden candidate"),
            golden_champion=run(golden, champion, "golden champion"),
        )
    return evaluations

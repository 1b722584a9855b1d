"""A round's stages in the round's own process (`round.runner: local`), on the device the settings give.

One generator per round process (one model load, one engine), shared by generation and the gate's evaluation;
freed before training where training needs the accelerator's memory. Training runs in this process, or in
`train.num_processes` processes under `accelerate launch`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path

from taoflow.connectors.errors import ConfigurationError, NothingToLearn
from taoflow.connectors.generation.base_model import ResolvedModel
from taoflow.connectors.generation.placement import (
    Placement,
    check_free_memory,
    release_accelerator,
    resolve_placement,
    visible_gpus,
    weights_bytes,
)
from taoflow.connectors.protocols import Generator
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.training.launch import train_adapter_distributed
from taoflow.connectors.training.lora import TrainingConfig, TrainingResult, train_adapter
from taoflow.daemon.round import candidates as cand
from taoflow.daemon.round import stages
from taoflow.daemon.round.evaluation import load_golden
from taoflow.daemon.round.parts import TaskScorers, resolve_model, training_config
from taoflow.daemon.round.stages import Judged, ProgressFactory, RoundWork, no_progress
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.state import State
from taoflow.daemon.store.summaries import GenerateSummary, RetriedSummary, ScoreSummary, TrainSummary

__all__ = ["LocalStages"]

log = logging.getLogger(__name__)

#: Training holds the base weights plus the LoRA weights, their gradients and optimiser state, and activations:
#: the weights times this is the least it can need (a floor: a check that passes can still run out later).
_TRAINING_HEADROOM = 1.2


class LocalStages:
    """The stages of one round, run here."""

    def __init__(
        self,
        settings: Settings,
        state: State,
        *,
        scorers: TaskScorers,
        generator_factory: Callable[[Path], Generator],
        gate_scorers: TaskScorers | None = None,
        progress: ProgressFactory = no_progress,
    ) -> None:
        self.settings = settings
        self.state = state
        self.scorers = scorers
        self.gate_scorers = gate_scorers  # None: the gate judges with the training scorers
        self.progress = progress
        self._generator_factory = generator_factory
        self._generator: Generator | None = None

    # ------------------------------------------------------------------ stages
    def generate(self, work: RoundWork) -> GenerateSummary:
        s = self.settings
        counts = stages.candidate_counts(s, work.prompts)
        records = work.records
        started = time.perf_counter()
        outputs = stages.generate_candidates(
            self.generator(),
            records,
            counts,
            settings=s,
            seeds=[work.seed] * len(records),
            adapter=self._adapter_path(work.champion),
            progress=self.progress("generate", len(records)),
        )
        seconds = time.perf_counter() - started
        work.files.write_candidates(records, outputs)
        retried = RetriedSummary(prompts=sum(1 for p in work.prompts if p.attempts), n=s.generate.retry_candidates)
        return stages.generation_summary(
            outputs,
            seconds,
            settings=s,
            retried=retried,
            device="fleet" if s.generate.backend == "fleet" else self.placement.device,
            sampling=stages.sampling_for(s, seed=work.seed),
        )

    def score(self, work: RoundWork) -> ScoreSummary:
        self.scorers.use_policy(self.base.path, self._adapter_path(work.champion))
        records = work.records
        candidates = work.files.candidates()
        progress = self.progress("score", len(records))
        scored = stages.score_candidates(records, candidates, self.scorers, progress=progress)
        work.files.write_scored(scored)
        return stages.score_summary(scored, self.settings, self.scorers)

    def train(self, work: RoundWork) -> TrainSummary:
        scored = work.files.scored()
        # Prompts erased since the round took them are not trained on (those erased from here on are recorded
        # against this round when it registers its adapter).
        gone = stages.erased_since_taken(self.state, work, [prompt.request_id for prompt, _ in scored])
        if gone:
            log.info(
                "round %d: %d of its prompts were erased since it took them; not trained on", work.record.id, len(gone)
            )
            scored = [(prompt, candidates) for prompt, candidates in scored if prompt.request_id not in gone]
        work.files.write_erased(gone)
        examples = stages.training_examples(scored, self.settings)
        if not examples:
            raise NothingToLearn(stages.nothing_to_learn(scored, self.settings, erased=len(gone)))
        replayed = stages.replay_examples(self.state, self.settings, work.champion, seed=work.seed)
        warm = work.champion if self.settings.train.init == "champion" else None
        config = replace(training_config(self.settings, self.placement), init_adapter=self._adapter_path(warm))
        self._free_generator()
        processes = self._training_processes()
        check_free_memory(
            self.placement,
            int(weights_bytes(self.base.path, self.placement.dtype) * _TRAINING_HEADROOM),
            what=f"training {self.base.reference} in {self.placement.dtype}",
        )
        result = self._train([*examples, *replayed], config, work, processes=processes)
        return stages.train_summary(
            result,
            placement=self.placement,
            base=self.base,
            examples=len(examples),
            replayed=len(replayed),
            init=warm,
            processes=processes,
        )

    def evaluate(self, work: RoundWork, version: str) -> Judged:
        # The candidate is judged against the champion serving now (a hand promotion during the round counts).
        champion = self.state.registry.alias(self.settings.model.served_name, "champion")
        g = self.settings.gate
        evaluations = stages.evaluate_gate(
            self.generator(),
            self.settings,
            scorers=self.scorers,
            gate_scorers=self.gate_scorers,
            heldout=[p.record for p in self.state.buffer.heldout()],
            golden=load_golden(g.golden_file) if g.golden_file is not None else [],
            base_dir=self.base.path,
            champion=self._adapter_path(champion),
            candidate=self.state.store.fetch(version),
            normalisation=work.record.summary.score.normalisation if work.record.summary.score else {},
            progress=self.progress,
        )
        return Judged(against=champion, evaluations=evaluations)

    # ------------------------------------------------------------------ training
    def _train(
        self, examples: list[object], config: TrainingConfig, work: RoundWork, *, processes: int
    ) -> TrainingResult:
        progress = self.progress("train", cand.planned_steps(len(examples), config, processes=processes))
        if processes > 1:
            return train_adapter_distributed(
                self.base.path,
                examples,  # type: ignore[arg-type]
                config,
                work_dir=work.files.train_dir,
                processes=processes,
                fsdp=self.settings.train.fsdp,
                progress=progress,
            )
        return train_adapter(
            self.base.path,
            examples,  # type: ignore[arg-type]
            config,
            work_dir=work.files.train_dir,
            progress=progress,
            reward=self._reward if config.objective == "grpo" else None,
        )

    def _reward(self, records: Sequence[PromptRecord], answers: Sequence[str]) -> list[float | None]:
        """GRPO's reward: the task's scorers, each prompt's answers of one batch scored together."""
        groups: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            groups.setdefault(record.request_id, []).append(index)
        values: list[float | None] = [None] * len(answers)
        for indices in groups.values():
            record = records[indices[0]]
            scored = self.scorers.for_task(record.task).score(record, [answers[i] for i in indices])
            for i, value in zip(indices, scored, strict=True):
                values[i] = value
        return values

    def _training_processes(self) -> int:
        """train.num_processes, or one per visible GPU when the round may use them all (device auto or cuda)."""
        wanted = self.settings.train.num_processes
        gpus = visible_gpus() if self.placement.on_accelerator else 0
        if wanted == 0:
            return gpus if gpus > 1 and self.settings.model.device in ("auto", "cuda") else 1
        if gpus and wanted > gpus:
            raise ConfigurationError(
                f"train.num_processes is {wanted} but this machine shows {gpus} GPU(s): one process per GPU; "
                "set train.num_processes to at most that (0: one per GPU)"
            )
        return wanted

    # ------------------------------------------------------------------ the model and where it runs
    @cached_property
    def base(self) -> ResolvedModel:
        """The base model, converted and cached on first use (a round with nothing to train never loads it)."""
        return resolve_model(self.settings)

    @cached_property
    def placement(self) -> Placement:
        """Where this round's model runs (`model.device`, `model.dtype`), resolved once."""
        return resolve_placement(self.settings.model.device, self.settings.model.dtype)

    def generator(self) -> Generator:
        """One generator per round process (one model load, one engine), shared by generation and the gate."""
        if self._generator is None:
            self._generator = self._generator_factory(self.base.path)
        return self._generator

    def _free_generator(self) -> None:
        """Training needs the accelerator's memory: a GPU model or a vLLM engine is dropped before it (the gate
        loads it again). On the CPU a transformers model stays, so the gate reuses it."""
        if self._generator is None:
            return
        if self.placement.on_accelerator or self.settings.generate.backend == "vllm":
            log.info("freeing the generation model before training")
            self._generator.close()
            self._generator = None
            release_accelerator()

    def _adapter_path(self, version: str | None) -> Path | None:
        return self.state.store.fetch(version) if version else None

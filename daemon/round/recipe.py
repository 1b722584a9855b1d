"""One TAO round, read top to bottom: prepare → generate → score → train → register → gate.

The heavy steps are the round's `Stages` (stages.py): run in this process or as a job on a cluster, the recipe
calls each once and never asks where it runs. Each step reads what the step before it left in the round's work
directory and records its completion with its summary (store/rounds.py); `TaoRound.run` resumes an unfinished
round at its next step, so an interrupted round is neither forgotten nor redone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace

from taoflow.connectors.errors import NothingToLearn, NothingToTrain, RoundError
from taoflow.connectors.files import write_atomic
from taoflow.daemon.round import candidates as cand
from taoflow.daemon.round.evaluation import slices
from taoflow.daemon.round.manifest import MANIFEST_FILE, manifest
from taoflow.daemon.round.parts import gate_policy, monitor_thresholds, resolve_model
from taoflow.daemon.round.stages import RoundWork, Stages
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.round_files import RoundPrompts
from taoflow.daemon.store.rounds import RoundRecord, RoundStore
from taoflow.daemon.store.state import State
from taoflow.daemon.store.summaries import (
    BaseModelRef,
    DoneSummary,
    GateSummary,
    MonitorSummary,
    NoiseSummary,
    PrepareSummary,
    RegisterSummary,
    SkipSummary,
    SliceSummary,
    StepSummary,
    UnscoredSummary,
)
from taoflow.policies.gate import GateDecision, SliceScores, decide_gate
from taoflow.policies.monitors import MonitorReport, check_gaming

__all__ = ["TaoRound"]

log = logging.getLogger(__name__)


class TaoRound:
    """Runs (or resumes) the round of one served model."""

    def __init__(
        self,
        settings: Settings,
        state: State,
        *,
        stages: Stages,
        auto_promote: bool = True,
        tasks: Sequence[str] = (),
        max_prompts: int | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.stages = stages
        self.tasks = tuple(tasks)  # empty: every task
        self.max_prompts = max_prompts
        self.rounds = RoundStore(state.db, state.rounds_dir)
        self.model_name = settings.model.served_name
        self.auto_promote = auto_promote

    # ------------------------------------------------------------------ recipe
    def run(self) -> RoundRecord:
        record = self.rounds.unfinished(self.model_name)
        if record is None:
            self._check_new_prompts()  # a round with nothing to train is never recorded (and costs no cooldown)
            record = self.rounds.start(self.model_name)
        if record.step != "pending":
            log.info("resuming round %d after step %s", record.id, record.step)
        steps: dict[str, Callable[[RoundRecord], tuple[StepSummary, str | None]]] = {
            "prepare": self.prepare,
            "generate": lambda r: (self.stages.generate(self._work(r)), None),
            "score": lambda r: (self.stages.score(self._work(r)), None),
            "train": lambda r: (self.stages.train(self._work(r)), None),
            "register": self.register,
            "gate": self.gate,
            "done": lambda r: (DoneSummary(), None),
        }
        while record.status == "running":
            step = record.next_step()
            started = time.perf_counter()
            try:
                summary, version = steps[step](record)
            except NothingToLearn as exc:
                log.warning("round %d skipped: %s", record.id, exc)
                return self._skip(record, step, str(exc), started)
            except Exception as exc:
                reason = f"{step} failed: {type(exc).__name__}: {exc}"
                log.error("round %d %s", record.id, reason)
                self.rounds.fail(record.id, reason)
                raise
            summary = summary.timed(time.perf_counter() - started)
            verdict = _verdict(summary) if isinstance(summary, GateSummary) else None
            record = self.rounds.complete_step(record.id, step, summary, version=version, reason=verdict)
        return record

    def prepare(self, record: RoundRecord) -> tuple[PrepareSummary, None]:
        limit = self.settings.generate.max_prompts
        if self.max_prompts is not None:
            limit = min(limit, self.max_prompts)
        prompts = self.state.buffer.training_prompts(limit, tasks=self.tasks or None)
        if not prompts:
            raise RoundError("the buffer holds no new training prompts; ingest some first")
        champion = self.state.registry.alias(self.model_name, "champion")
        record.files.write_prompts(RoundPrompts(ids=[p.id for p in prompts], champion=champion))
        tasks: dict[str, int] = {}
        for p in prompts:
            tasks[p.record.task] = tasks.get(p.record.task, 0) + 1
        return PrepareSummary(prompts=len(prompts), tasks=tasks, champion=champion), None

    def register(self, record: RoundRecord) -> tuple[RegisterSummary, str]:
        # Idempotent: a round interrupted after storing or registering resumes here without duplicates.
        work = self._work(record)
        base = self._base_of(record)
        version = f"{self.model_name}-r{record.id:04d}-{record.started_stamp}"
        store, registry = self.state.store, self.state.registry
        if not store.exists(version):
            made_of = manifest(
                version=version,
                base=base,
                parent=work.champion,
                prompts=work.records,
                settings=self.settings,
                summary=record.summary,
            )
            write_atomic(
                record.files.adapter_dir / MANIFEST_FILE,
                json.dumps(made_of, indent=2, sort_keys=True),
                private=False,  # hashes only; it travels with the adapter to the replicas
            )
            store.put(version, record.files.adapter_dir)
        uri = store.uri(version)
        if version not in {v.version for v in registry.versions(model=self.model_name)}:
            registry.register(
                version=version,
                model=self.model_name,
                parent=work.champion,
                base_model=base.reference,
                base_digest=base.digest,
                uri=uri,
                manifest=json.loads((store.fetch(version) / MANIFEST_FILE).read_text()),
            )
        again = self.state.buffer.mark_consumed(
            record.files.prompts().ids,
            record.id,
            not_trained=record.files.erased(),
            unsolved=self._unsolved(work),
            retries=self.settings.generate.retry_unsolved,
        )
        return RegisterSummary(version=version, uri=uri, retry=len(again)), version

    def gate(self, record: RoundRecord) -> tuple[GateSummary, None]:
        version = record.version
        if version is None:
            raise RoundError(f"round {record.id} reached the gate without a registered adapter")
        judged = self.stages.evaluate(self._work(record), version)
        e = judged.evaluations
        golden = slices(e.golden_candidate, e.golden_champion) if e.golden_candidate and e.golden_champion else []
        decision = decide_gate(slices(e.candidate, e.champion), gate_policy(self.settings), golden=golden)
        training_slices = None
        if e.candidate_by_training_scorers and e.champion_by_training_scorers:
            training_slices = slices(e.candidate_by_training_scorers, e.champion_by_training_scorers)
        monitors = self._monitors(e.candidate.answers, e.champion.answers, decision, training_slices)
        if decision.passed and monitors is not None and not monitors.passed:
            decision = replace(decision, passed=False, outcome="monitor", reason=f"monitors: {monitors.reason}")
        registry = self.state.registry
        if registry.get(version).state == "candidate":  # not yet judged (a resumed gate may find it judged)
            registry.transition(version, "gated" if decision.passed else "rejected", reason=decision.reason)
        promoted = decision.passed and self.auto_promote
        if promoted and registry.get(version).state == "gated":
            registry.promote(version, reason=f"gate passed: {decision.reason}")
        # What the training scorers say of the same answers, beside the gate's own.
        training_scorers = [_slice_summary(s) for s in training_slices] if training_slices is not None else None
        summary = GateSummary(
            passed=decision.passed,
            outcome=decision.outcome,
            reason=decision.reason,
            promoted=promoted,
            against=judged.against or "base",
            slices=[_slice_summary(s) for s in decision.slices],
            golden=[_slice_summary(s) for s in decision.golden],
            noise=NoiseSummary(**vars(decision.noise)) if decision.noise else None,
            unscored=UnscoredSummary(baseline=e.champion.unscored, candidate=e.candidate.unscored),
            training_scorers=training_scorers,
            monitors=MonitorSummary(**asdict(monitors)) if monitors is not None else None,
        )
        return summary, None

    def _monitors(
        self,
        candidate: Sequence[str],
        champion: Sequence[str],
        decision: GateDecision,
        training: Sequence[SliceScores] | None,
    ) -> MonitorReport | None:
        """The scorer-gaming monitors on the gate's answers (None: turned off)."""
        if not self.settings.gate.monitors.enabled:
            return None
        training_improvement = None
        if training is not None and (n := sum(s.n for s in training)):
            training_improvement = sum(s.delta * s.n for s in training) / n
        return check_gaming(
            candidate,
            champion,
            monitor_thresholds(self.settings),
            training_improvement=training_improvement,
            independent_improvement=decision.mean_improvement if training_improvement is not None else None,
        )

    # ------------------------------------------------------------------ helpers
    def _work(self, record: RoundRecord) -> RoundWork:
        taken = record.files.prompts()
        return RoundWork(record=record, prompts=self.state.buffer.get(taken.ids), champion=taken.champion)

    def _base_of(self, record: RoundRecord) -> BaseModelRef:
        """The base model the round's adapter was trained on, as its training resolved it (a round recorded by a
        version that did not say: the one the settings name)."""
        if record.summary.train is not None and record.summary.train.base is not None:
            return record.summary.train.base
        base = resolve_model(self.settings)
        return BaseModelRef(reference=base.reference, digest=base.digest, path=str(base.path))

    def _check_new_prompts(self) -> None:
        counts = {task: c.new for task, c in self.state.buffer.stats().tasks.items()}
        wanted = self.tasks or tuple(counts)
        if not any(counts.get(task, 0) for task in wanted):
            held = ", ".join(f"{task}: {n}" for task, n in counts.items()) or "none"
            raise NothingToTrain(
                f"the buffer holds no new training prompts for {', '.join(wanted) or 'any task'} "
                f"(new prompts per task: {held}); ingest some first"
            )

    def _skip(self, record: RoundRecord, step: str, reason: str, started: float) -> RoundRecord:
        """A skipped round trains on none of its prompts: each is left for a later round while it has tries left
        (generate.retry_unsolved), else consumed."""
        work = self._work(record)
        ids = record.files.prompts().ids
        again = self.state.buffer.mark_consumed(
            ids,
            record.id,
            not_trained=[p.request_id for p in work.records],
            unsolved=ids,
            retries=self.settings.generate.retry_unsolved,
        )
        summary = SkipSummary(skipped=reason, retry=len(again)).timed(time.perf_counter() - started)
        return self.rounds.skip(record.id, step, summary)

    def _unsolved(self, work: RoundWork) -> list[int]:
        """The round's prompts in which no candidate passed the selection (nothing to learn from them)."""
        ids = {p.record.request_id: p.id for p in work.prompts}
        scored = work.files.scored()
        selection = cand.selection_of(self.settings, scored)
        return [
            ids[p.request_id]
            for p, candidates in scored
            if p.request_id in ids and not cand.learns_from(selection, p, candidates)
        ]


def _verdict(gate: GateSummary) -> str:
    """The round's reason once the gate has judged it: what the gate decided and why."""
    verdict = "gate passed" if gate.passed else "gate rejected the adapter"
    return f"{verdict}: {gate.reason}" + ("; promoted to champion" if gate.promoted else "")


def _slice_summary(s: SliceScores) -> SliceSummary:
    """A slice as the round records it: its means and how many prompts changed (not every prompt's delta)."""
    return SliceSummary(
        task=s.task,
        n=s.n,
        candidate_mean=s.candidate_mean,
        champion_mean=s.champion_mean,
        changed=s.changed,
        left_out=s.left_out,
    )

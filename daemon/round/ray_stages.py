"""A round's stages as one job on a Ray cluster (`round.runner: ray`), seen from the daemon.

The job (`on_ray.py`) runs generation, scoring, training and the gate's evaluation together, calling the same
stage bodies a local round calls (`stages.py`). The first stage here submits it, follows it to its end and brings
its outputs home into the round's files (`ray_job.py`); the later stages hand over what it reported. Prompts erased
before the job starts are not sent; those erased while it runs are recorded against the round at register, as
prompts erased during a local round's training are. No Ray import: the job runs on the cluster.
"""

from __future__ import annotations

from typing import TypeVar

from taoflow.connectors.errors import NothingToLearn, RoundError
from taoflow.daemon.round import stages
from taoflow.daemon.round.evaluation import load_golden
from taoflow.daemon.round.parts import training_config
from taoflow.daemon.round.ray_job import RayRoundJob, RoundInputs
from taoflow.daemon.round.stages import Judged, RoundWork
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.state import State
from taoflow.daemon.store.summaries import GenerateSummary, RetriedSummary, ScoreSummary, TrainSummary

__all__ = ["RayStages"]

S = TypeVar("S", GenerateSummary, ScoreSummary, TrainSummary)


class RayStages:
    """The stages of one round, run as a job on the cluster."""

    def __init__(self, settings: Settings, state: State, *, job: RayRoundJob | None = None) -> None:
        self.settings = settings
        self.state = state
        self.job = job or RayRoundJob(settings)

    def generate(self, work: RoundWork) -> GenerateSummary:
        """The round's whole job: its inputs sent, the job run, its outputs brought home."""
        s = self.settings
        gone = stages.erased_since_taken(self.state, work, [p.record.request_id for p in work.prompts])
        work.files.write_erased(gone)
        sent = [p for p in work.prompts if p.record.request_id not in gone]
        if not sent:
            taken = len(work.files.prompts().ids)
            raise NothingToLearn(f"all {taken} prompts of the round were erased before it started")
        champion_dir = self.state.store.fetch(work.champion) if work.champion else None
        inputs = RoundInputs(
            prompts=[p.record for p in sent],
            candidates=stages.candidate_counts(s, sent),
            heldout=[p.record for p in self.state.buffer.heldout()],
            golden=load_golden(s.gate.golden_file) if s.gate.golden_file else [],
            replay=stages.replay_examples(self.state, s, work.champion, seed=work.seed),
            training=training_config(s),
            champion=work.champion,
            champion_dir=champion_dir,
        )
        reported = self.job.run(work.record, inputs)
        retried = RetriedSummary(prompts=sum(1 for p in sent if p.attempts), n=s.generate.retry_candidates)
        return _reported(reported.generate, "generate").model_copy(
            update={"runner": "ray", "job": reported.job, "retried": retried}
        )

    def score(self, work: RoundWork) -> ScoreSummary:
        return _reported(work.files.cluster_stages().score, "score")

    def train(self, work: RoundWork) -> TrainSummary:
        reported = work.files.cluster_stages()
        if reported.nothing_to_learn:
            scored = work.files.scored()
            raise NothingToLearn(stages.nothing_to_learn(scored, self.settings, erased=len(work.files.erased())))
        return _reported(reported.train, "train")

    def evaluate(self, work: RoundWork, version: str) -> Judged:
        """The job evaluated both sides against the champion the round started from."""
        return Judged(against=work.champion, evaluations=work.files.evaluations())


def _reported(summary: S | None, stage: str) -> S:
    if summary is None:
        raise RoundError(f"the round's job on the cluster succeeded but reported no {stage} stage")
    return summary

"""The files a round keeps in its work directory: their names and their formats, in one place.

Every step writes its outputs here before its completion is committed to the database (store/rounds.py), so a
recorded step's files are complete. The recipe, both runners' stages, the job on a cluster (whose Parquet rows
carry the same lines), the scorer check, the flywheel's metrics and erasure all read and write them through this
module.

    prompts.json                    the buffer ids the round took, and the champion it started from
    candidates.jsonl                a line per prompt: its request id and sampled candidates
    scored.jsonl                    a line per prompt: its record and its candidates with their scores
    erased-before-training.json     request ids erased before training: not trained on
    evaluations.json                the gate's evaluations of both sides (a round on a cluster brings them home)
    train/                          training's checkpoints and its adapter (train/adapter)
    ray/                            what a round on a cluster brought home: stages.json, candidates, scores, adapter
    ray-job.json                    the round's job on the cluster: its attempt and submission id
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from taoflow.connectors.files import write_atomic
from taoflow.connectors.protocols import Completion
from taoflow.connectors.records import PromptRecord
from taoflow.daemon.store.summaries import GenerateSummary, ScoreSummary, TrainSummary
from taoflow.policies.selection import ScoredCandidate

__all__ = [
    "ClusterStages",
    "Evaluation",
    "GateEvaluations",
    "RoundFiles",
    "RoundPrompts",
    "ScoredPrompt",
    "candidates_line",
    "read_candidates_line",
    "read_scored_line",
    "scored_line",
]

#: A prompt with its scored candidates.
ScoredPrompt = tuple[PromptRecord, list[ScoredCandidate]]


@dataclass(frozen=True)
class RoundPrompts:
    """What the prepare step took: buffer ids, and the champion the round started from (None: the base model)."""

    ids: list[int]
    champion: str | None


@dataclass(frozen=True)
class Evaluation:
    """Per-task greedy scores (None: the answer could not be scored) and the answers themselves."""

    scores: dict[str, list[float | None]]
    answers: list[str] = field(default_factory=list)
    unscored: int = 0

    def mean(self, task: str) -> float:
        """The task's mean over its scored answers (an unscored one is not a zero: it says nothing)."""
        values = [v for v in self.scores.get(task, []) if v is not None]
        return sum(values) / len(values) if values else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"scores": self.scores, "answers": self.answers, "unscored": self.unscored}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Evaluation:
        return cls(scores=dict(data["scores"]), answers=list(data["answers"]), unscored=int(data["unscored"]))


@dataclass(frozen=True)
class GateEvaluations:
    """The gate's evaluations: the champion (or base model) and the candidate on the held-out prompts through one
    generator and one set of scorers; the same answers by the training scorers when the gate has its own; both
    sides on the golden set when there is one."""

    champion: Evaluation
    candidate: Evaluation
    champion_by_training_scorers: Evaluation | None = None
    candidate_by_training_scorers: Evaluation | None = None
    golden_champion: Evaluation | None = None
    golden_candidate: Evaluation | None = None

    def to_json(self) -> dict[str, Any]:
        return {label: getattr(self, name).to_json() for label, name in _LABELS.items() if getattr(self, name)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateEvaluations:
        return cls(**{name: Evaluation.from_json(data[label]) for label, name in _LABELS.items() if label in data})


#: How evaluations.json names each evaluation (the job on a cluster writes the same file).
_LABELS = {
    "champion": "champion",
    "candidate": "candidate",
    "champion training scorers": "champion_by_training_scorers",
    "candidate training scorers": "candidate_by_training_scorers",
    "golden champion": "golden_champion",
    "golden candidate": "golden_candidate",
}


@dataclass(frozen=True)
class ClusterStages:
    """What a round's job on a cluster reported of its stages (`ray/stages.json`): each stage's summary as the job
    wrote it, and whether it found nothing to learn (then it trained and evaluated nothing)."""

    job: str
    generate: GenerateSummary | None = None
    score: ScoreSummary | None = None
    train: TrainSummary | None = None
    evaluated: bool = False
    nothing_to_learn: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"job": self.job, "evaluated": self.evaluated, "nothing_to_learn": self.nothing_to_learn}
        for stage in ("generate", "score", "train"):
            summary = getattr(self, stage)
            if summary is not None:
                data[stage] = summary.model_dump(mode="json")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterStages:
        return cls(
            job=str(data["job"]),
            generate=GenerateSummary.model_validate(data["generate"]) if "generate" in data else None,
            score=ScoreSummary.model_validate(data["score"]) if "score" in data else None,
            train=TrainSummary.model_validate(data["train"]) if "train" in data else None,
            evaluated=bool(data.get("evaluated", "evaluate" in data)),
            nothing_to_learn=bool(data.get("nothing_to_learn", False)),
        )


class RoundFiles:
    """A round's work directory."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.prompts_file = work_dir / "prompts.json"
        self.candidates_file = work_dir / "candidates.jsonl"
        self.scored_file = work_dir / "scored.jsonl"
        self.erased_file = work_dir / "erased-before-training.json"
        self.evaluations_file = work_dir / "evaluations.json"
        self.train_dir = work_dir / "train"
        self.adapter_dir = self.train_dir / "adapter"
        self.cluster_dir = work_dir / "ray"
        self.cluster_stages_file = self.cluster_dir / "stages.json"
        self.cluster_job_file = work_dir / "ray-job.json"
        self.replay_job_file = work_dir / "replay-job.json"

    # ------------------------------------------------------------------ prompts
    def write_prompts(self, prompts: RoundPrompts) -> None:
        _write_json(self.prompts_file, {"ids": prompts.ids, "champion": prompts.champion})

    def prompts(self) -> RoundPrompts:
        data = json.loads(self.prompts_file.read_text())
        return RoundPrompts(ids=[int(i) for i in data["ids"]], champion=data["champion"])

    def took_prompts(self) -> bool:
        return self.prompts_file.exists()

    # ------------------------------------------------------------------ candidates and scores
    def write_candidates(self, prompts: Sequence[PromptRecord], outputs: Sequence[Sequence[Completion]]) -> None:
        lines = [candidates_line(p.request_id, row) for p, row in zip(prompts, outputs, strict=True)]
        write_atomic(self.candidates_file, "\n".join(lines) + "\n")

    def has_candidates(self) -> bool:
        return self.candidates_file.exists()

    def candidates(self) -> dict[str, list[Completion]]:
        return dict(read_candidates_line(line) for line in self.candidates_file.read_text().splitlines())

    def write_scored(self, scored: Sequence[ScoredPrompt]) -> None:
        write_atomic(self.scored_file, "".join(scored_line(r, cs) + "\n" for r, cs in scored))

    def has_scores(self) -> bool:
        return self.scored_file.is_file()

    def scored(self) -> list[ScoredPrompt]:
        return [read_scored_line(line) for line in self.scored_file.read_text().splitlines()]

    # ------------------------------------------------------------------ erasure
    def write_erased(self, request_ids: Collection[str]) -> None:
        _write_json(self.erased_file, sorted(request_ids))

    def erased(self) -> list[str]:
        """Request ids erased before training (none recorded: none)."""
        return [str(r) for r in json.loads(self.erased_file.read_text())] if self.erased_file.exists() else []

    def scrub(self, request_ids: set[str]) -> int:
        """Take these prompts out of the candidates and scores (each file rewritten whole and atomically); returns
        the files rewritten. A round reads both by request id, so one still running goes on without them."""
        return _scrub(self.candidates_file, ("request_id",), request_ids) + _scrub(
            self.scored_file, ("record", "request_id"), request_ids
        )

    # ------------------------------------------------------------------ the gate
    def write_evaluations(self, evaluations: GateEvaluations) -> None:
        _write_json(self.evaluations_file, evaluations.to_json())

    def evaluations(self) -> GateEvaluations:
        return GateEvaluations.from_json(json.loads(self.evaluations_file.read_text()))

    # ------------------------------------------------------------------ a round on a cluster
    def write_cluster_stages(self, stages: ClusterStages) -> None:
        _write_json(self.cluster_stages_file, stages.to_json())

    def cluster_stages(self) -> ClusterStages:
        return ClusterStages.from_json(json.loads(self.cluster_stages_file.read_text()))

    def cluster_job(self) -> dict[str, Any] | None:
        if not self.cluster_job_file.exists():
            return None
        data: dict[str, Any] = json.loads(self.cluster_job_file.read_text())
        return data

    def write_cluster_job(self, job: Mapping[str, Any]) -> None:
        _write_json(self.cluster_job_file, dict(job))


# ---------------------------------------------------------------------- a line of each file
def candidates_line(request_id: str, candidates: Sequence[Completion]) -> str:
    return json.dumps({"request_id": request_id, "candidates": [asdict(c) for c in candidates]})


def read_candidates_line(line: str) -> tuple[str, list[Completion]]:
    data = json.loads(line)
    return str(data["request_id"]), [Completion(**c) for c in data["candidates"]]


def scored_line(record: PromptRecord, candidates: Sequence[ScoredCandidate]) -> str:
    return json.dumps({"record": json.loads(record.to_json()), "candidates": [asdict(c) for c in candidates]})


def read_scored_line(line: str) -> ScoredPrompt:
    data = json.loads(line)
    record = PromptRecord.from_json(json.dumps(data["record"]))
    return record, [ScoredCandidate(**c) for c in data["candidates"]]


def _write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def _scrub(path: Path, key: tuple[str, ...], request_ids: set[str]) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    kept = []
    for line in lines:
        try:
            value: Any = json.loads(line)
            for part in key:
                value = value[part]
        except (ValueError, KeyError, TypeError):
            value = None
        if value not in request_ids:
            kept.append(line)
    if len(kept) == len(lines):
        return 0
    write_atomic(path, "".join(f"{line}\n" for line in kept))
    return 1

"""Candidates on disk between steps, their scores, the training examples and the manifest."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from taoflow.connectors.generation.base_model import ResolvedModel
from taoflow.connectors.protocols import Completion, Progress
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.training.lora import DistillExample, PreferenceExample, PromptExample, TrainingConfig
from taoflow.daemon.round.parts import TaskScorers
from taoflow.daemon.settings import Settings
from taoflow.policies.selection import (
    ScoredCandidate,
    select_distill_targets,
    select_preference_pair,
    select_relative_targets,
)

__all__ = [
    "ScoredPrompt",
    "Selection",
    "manifest",
    "planned_steps",
    "read_candidates",
    "read_scored",
    "score_all",
    "score_statistics",
    "selection_of",
    "training_examples",
    "write_candidates",
    "write_scored",
]

ScoredPrompt = tuple[PromptRecord, list[ScoredCandidate]]


def write_candidates(path: Path, prompts: Sequence[PromptRecord], outputs: Sequence[Sequence[Completion]]) -> None:
    lines = [
        json.dumps({"request_id": p.request_id, "candidates": [asdict(c) for c in row]})
        for p, row in zip(prompts, outputs, strict=True)
    ]
    _atomic_write(path, "\n".join(lines) + "\n")


def read_candidates(path: Path) -> dict[str, list[Completion]]:
    rows = {}
    for line in path.read_text().splitlines():
        data = json.loads(line)
        rows[data["request_id"]] = [Completion(**c) for c in data["candidates"]]
    return rows


def score_all(
    prompts: Sequence[PromptRecord],
    candidates: dict[str, list[Completion]],
    scorers: TaskScorers,
    *,
    progress: Progress | None = None,
) -> list[ScoredPrompt]:
    scorers.prepare(prompts, [[c.text for c in candidates[p.request_id]] for p in prompts])
    scored: list[ScoredPrompt] = []
    for record in prompts:
        row = candidates[record.request_id]
        values = scorers.for_task(record.task).score(record, [c.text for c in row])
        scored.append(
            (record, [ScoredCandidate(c.text, v, c.num_tokens, c.finished) for c, v in zip(row, values, strict=True)])
        )
        if progress is not None:
            progress(1)
    return scored


def write_scored(path: Path, scored: Sequence[ScoredPrompt]) -> None:
    lines = [json.dumps({"record": json.loads(r.to_json()), "candidates": [asdict(c) for c in cs]}) for r, cs in scored]
    _atomic_write(path, "\n".join(lines) + "\n")


def read_scored(path: Path) -> list[ScoredPrompt]:
    out: list[ScoredPrompt] = []
    for line in path.read_text().splitlines():
        data = json.loads(line)
        record = PromptRecord.from_json(json.dumps(data["record"]))
        out.append((record, [ScoredCandidate(**c) for c in data["candidates"]]))
    return out


@dataclass(frozen=True)
class Selection:
    """Which candidates a round learns from (mirrors the `train` settings: policies/selection.py decides)."""

    objective: str = "sft"
    mode: str = "threshold"  # threshold | relative
    threshold: float = 0.99
    relative_margin: float = 0.1
    floor: float = 0.0
    per_prompt: int = 2
    dpo_margin: float = 0.5

    def targets(self, candidates: Sequence[ScoredCandidate]) -> list[ScoredCandidate]:
        if self.mode == "relative":
            return select_relative_targets(
                candidates, margin=self.relative_margin, floor=self.floor, per_prompt=self.per_prompt
            )
        return select_distill_targets(candidates, threshold=self.threshold, per_prompt=self.per_prompt)

    def pair(self, candidates: Sequence[ScoredCandidate]) -> tuple[ScoredCandidate, ScoredCandidate] | None:
        floor = self.floor if self.mode == "relative" else self.threshold
        return select_preference_pair(candidates, margin=self.dpo_margin, threshold=floor)

    def spread(self, candidates: Sequence[ScoredCandidate]) -> bool:
        """GRPO learns from a prompt whose answers score differently (alike, its group advantage is zero)."""
        values = [c.score for c in candidates if c.score is not None]
        return len(values) > 1 and max(values) - min(values) >= max(self.relative_margin, 1e-9)

    def learns_from(self, candidates: Sequence[ScoredCandidate]) -> bool:
        if self.objective == "grpo":
            return self.spread(candidates)
        return bool(self.pair(candidates) if self.objective == "dpo" else self.targets(candidates))


def selection_of(settings: Settings) -> Selection:
    """The selection the `train` settings name."""
    t = settings.train
    return Selection(
        objective=t.objective,
        mode=t.selection,
        threshold=t.score_threshold,
        relative_margin=t.relative_margin,
        floor=t.score_floor,
        per_prompt=t.targets_per_prompt,
        dpo_margin=t.dpo_margin,
    )


def training_examples(
    scored: Sequence[ScoredPrompt], selection: Selection
) -> list[DistillExample] | list[PreferenceExample] | list[PromptExample]:
    if selection.objective == "grpo":
        return [PromptExample(record) for record, cands in scored if selection.spread(cands)]
    if selection.objective == "dpo":
        pairs = []
        for record, cands in scored:
            pair = selection.pair(cands)
            if pair is not None:
                pairs.append(PreferenceExample(record.messages, pair[0].text, pair[1].text))
        return pairs
    return [DistillExample(record.messages, c.text) for record, cands in scored for c in selection.targets(cands)]


def score_statistics(scored: Sequence[ScoredPrompt], selection: Selection) -> dict[str, dict[str, Any]]:
    by_task: dict[str, list[list[ScoredCandidate]]] = {}
    for record, cands in scored:
        by_task.setdefault(record.task, []).append(cands)
    stats: dict[str, dict[str, Any]] = {}
    for task, groups in sorted(by_task.items()):
        values = [c.score for g in groups for c in g if c.score is not None]
        best = [max(scores) for g in groups if (scores := [c.score for c in g if c.score is not None])]
        stats[task] = {
            "prompts": len(groups),
            "candidates": sum(len(g) for g in groups),
            "unscored": sum(c.score is None for g in groups for c in g),
            "mean": round(statistics.fmean(values), 4) if values else None,
            "best_median": round(statistics.median(best), 4) if best else None,
            "best_max": round(max(best), 4) if best else None,
            "pass_rate": round(sum(v >= selection.threshold for v in values) / len(values), 4) if values else None,
            "prompts_with_target": sum(selection.learns_from(g) for g in groups),
        }
    return stats


def planned_steps(num_examples: int, config: TrainingConfig, *, processes: int = 1) -> int:
    """Optimiser steps the training step will take (for its progress bar): batches over all processes, per
    gradient_accumulation micro-batches."""
    if config.objective == "grpo":  # a step takes whole groups of generations
        group = config.grpo_generations
        batches = -(-num_examples * group // (group * max(1, config.batch_size // group)))
    else:
        batches = -(-num_examples // (config.batch_size * processes))
    per_epoch = max(1, batches // config.gradient_accumulation)
    return max(1, int(per_epoch * config.epochs + 0.999))


def manifest(
    *,
    version: str,
    base: ResolvedModel,
    parent: str | None,
    prompts: Sequence[PromptRecord],
    settings: Settings,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """What an adapter was made from: enough to audit or reproduce it."""
    prompt_hashes = sorted(p.prompt_hash for p in prompts)
    data_hash = hashlib.sha256("\n".join(prompt_hashes).encode()).hexdigest()
    return {
        "version": version,
        "base_model": {"reference": base.reference, "digest": base.digest},
        "parent": parent,
        "data": {"prompts": len(prompts), "prompt_set_sha256": data_hash},
        "config": {
            "generate": settings.generate.model_dump(mode="json"),
            "score": settings.score.model_dump(mode="json"),
            "train": settings.train.model_dump(mode="json"),
        },
        "timings_seconds": {step: s.get("seconds") for step, s in summary.items() if isinstance(s, dict)},
        "scores": summary.get("score", {}).get("tasks", {}),
        "training": {k: v for k, v in summary.get("train", {}).items() if k != "seconds"},
    }


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

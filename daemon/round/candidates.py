"""Which candidates a round learns from (the selection the `train` settings name), and figures about them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from taoflow.connectors.records import PromptRecord
from taoflow.connectors.tool_calls import ToolCallParser, parse_answer
from taoflow.connectors.training.lora import DistillExample, PreferenceExample, PromptExample, TrainingConfig
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.round_files import ScoredPrompt
from taoflow.policies.selection import (
    SATURATED_SHARE,
    ScoredCandidate,
    score_shape,
    select_distill_targets,
    select_preference_pair,
    select_relative_targets,
)
from taoflow.policies.tool_use import ExpectedAnswer, expected_answer

__all__ = [
    "Selection",
    "advice",
    "expected_of",
    "fits",
    "learns_from",
    "planned_steps",
    "score_statistics",
    "selection_of",
    "training_examples",
]


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
    #: How the model writes calls (`model.tool_call_parser`): what tells a call from text in an agent prompt's answer.
    tool_call_parser: ToolCallParser = "none"
    #: `auto`: each task's decided mode and why, (task, mode, reason), from the round's scored candidates.
    by_task: tuple[tuple[str, str, str], ...] = ()

    def for_task(self, task: str) -> Selection:
        """The selection of one task's prompts (auto: the mode decided for it; threshold where none was)."""
        if self.mode != "auto":
            return self
        mode = next((m for t, m, _ in self.by_task if t == task), "threshold")
        return replace(self, mode=mode, by_task=())

    def reason(self, task: str) -> str:
        return next((r for t, _, r in self.by_task if t == task), "")

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


def selection_of(settings: Settings, scored: Sequence[ScoredPrompt] = ()) -> Selection:
    """The selection the `train` settings name; with `auto`, each task's mode decided from `scored` (the round's
    candidates): a pure function of them, so every caller given the same candidates decides alike."""
    t = settings.train
    selection = Selection(
        objective=t.objective,
        mode=t.selection,
        threshold=t.score_threshold,
        relative_margin=t.relative_margin,
        floor=t.score_floor,
        per_prompt=t.targets_per_prompt,
        dpo_margin=t.dpo.margin,
        tool_call_parser=settings.model.tool_call_parser,
    )
    if t.selection != "auto":
        return selection
    by_task: dict[str, list[Sequence[ScoredCandidate]]] = {}
    for record, cands in scored:
        by_task.setdefault(record.task, []).append(cands)
    decided = tuple((task, *_decide(selection, groups)) for task, groups in sorted(by_task.items()))
    return replace(selection, by_task=decided)


def _decide(selection: Selection, groups: Sequence[Sequence[ScoredCandidate]]) -> tuple[str, str]:
    """`threshold` for 0/1 scores, or where it keeps a quarter of the prompts or as many as `relative` would;
    otherwise `relative` (graded or continuous scores that seldom reach the threshold)."""
    shape = score_shape([[c.score for c in g] for g in groups])
    if shape.kind in ("binary", "none"):
        return "threshold", f"scores are {'0/1' if shape.kind == 'binary' else 'missing'}"
    levels = f"{shape.kind} ({', '.join(f'{v:g}' for v in shape.levels)})" if shape.levels else shape.kind
    at_threshold = replace(selection, mode="threshold", by_task=())
    kept = sum(at_threshold.learns_from(g) for g in groups)
    relative = sum(replace(selection, mode="relative", by_task=()).learns_from(g) for g in groups)
    figures = f"a candidate at {selection.threshold:g} in {kept} of {len(groups)} prompts, relative keeps {relative}"
    if kept >= 0.25 * len(groups) or kept >= relative:
        return "threshold", f"scores are {levels}; {figures}"
    return "relative", f"scores are {levels} and seldom reach the threshold: {figures}"


def training_examples(
    scored: Sequence[ScoredPrompt], selection: Selection
) -> list[DistillExample] | list[PreferenceExample] | list[PromptExample]:
    if selection.objective == "grpo":
        return [PromptExample(record) for record, cands in scored if learns_from(selection, record, cands)]
    if selection.objective == "dpo":
        pairs = []
        for record, cands in scored:
            pair = _pair(selection, record, cands)
            if pair is not None:
                pairs.append(PreferenceExample(record.messages, pair[0].text, pair[1].text, tools=record.tools))
        return pairs
    return [
        DistillExample(record.messages, c.text, tools=record.tools)
        for record, cands in scored
        for c in _targets(selection, record, cands)
    ]


def learns_from(selection: Selection, record: PromptRecord, candidates: Sequence[ScoredCandidate]) -> bool:
    """Whether the round trains on this prompt: the selection keeps an answer of a kind the prompt may be trained
    toward (GRPO leaves agent prompts out: its trainer samples without the request's tools)."""
    if selection.objective == "grpo":
        return not record.uses_tools and selection.spread(candidates)
    if selection.objective == "dpo":
        return _pair(selection, record, candidates) is not None
    return bool(_targets(selection, record, candidates))


def expected_of(record: PromptRecord) -> ExpectedAnswer:
    """A call, text or either: what a prompt may be trained toward (policies/tool_use.py decides)."""
    return expected_answer(
        offers_tools=bool(record.tools),
        tool_choice=record.tool_choice,
        last_role=record.messages[-1].role,
        served_call=bool(record.response_calls),
        served_text=bool(record.response and record.response.strip()) and not record.response_calls,
    )


def fits(record: PromptRecord, answer: str, parser: ToolCallParser) -> bool:
    """Whether `answer` is of a kind the prompt may be trained toward (always, for a prompt without tools or calls);
    a malformed call never is."""
    if not record.uses_tools:
        return True
    parsed = parse_answer(answer, parser)
    return not parsed.malformed and expected_of(record).allows(is_call=bool(parsed.calls))


def _targets(selection: Selection, record: PromptRecord, cands: Sequence[ScoredCandidate]) -> list[ScoredCandidate]:
    chosen = selection.for_task(record.task).targets(cands)
    return [c for c in chosen if fits(record, c.text, selection.tool_call_parser)]


def _pair(
    selection: Selection, record: PromptRecord, cands: Sequence[ScoredCandidate]
) -> tuple[ScoredCandidate, ScoredCandidate] | None:
    pair = selection.for_task(record.task).pair(cands)
    return pair if pair is not None and fits(record, pair[0].text, selection.tool_call_parser) else None


def score_statistics(scored: Sequence[ScoredPrompt], selection: Selection) -> dict[str, dict[str, Any]]:
    by_task: dict[str, list[list[ScoredCandidate]]] = {}
    for record, cands in scored:
        by_task.setdefault(record.task, []).append(cands)
    stats: dict[str, dict[str, Any]] = {}
    decided = selection
    for task, groups in sorted(by_task.items()):
        selection = decided.for_task(task)
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
        shape = score_shape([[c.score for c in g] for g in groups])
        stats[task].update(score_kind=shape.kind, score_levels=list(shape.levels), flat_prompts=shape.flat)
        stats[task].update(selection=selection.mode, selection_reason=decided.reason(task))
        if selection.objective != "grpo":
            other = replace(selection, mode="relative" if selection.mode == "threshold" else "threshold")
            stats[task]["other_selection_keeps"] = sum(other.learns_from(g) for g in groups)
    return stats


def advice(stats: dict[str, dict[str, Any]], selection: Selection) -> list[str]:
    """For each task that taught little: why, from its figures, and what would change it."""
    lines = []
    decided = selection
    for task, t in stats.items():
        selection = decided.for_task(task)
        prompts, kept, other = t["prompts"], t["prompts_with_target"], t.get("other_selection_keeps")
        if prompts >= 4 and t["flat_prompts"] >= SATURATED_SHARE * prompts:
            lines.append(
                f"{task}: the candidates of {t['flat_prompts']} of {prompts} prompts all scored alike (mean "
                f"{t['mean']}): its scorers cannot tell this model's answers apart, so they carry almost no signal "
                "to learn from; a judge comparing the group's answers (relative), a stricter rubric, a stronger "
                "judge model (calibrated first: taoflow scorers check --golden), or a verifier would"
            )
        elif other is not None and kept < 0.25 * prompts and other >= max(2 * kept, kept + 4):
            levels = ", ".join(f"{v:g}" for v in t["score_levels"]) or t["score_kind"]
            if selection.mode == "threshold":
                lines.append(
                    f"{task}: {kept} of {prompts} prompts had a candidate scoring at least {selection.threshold:g} "
                    f"(train.score_threshold); scores are {t['score_kind']} ({levels}): train.selection: relative "
                    f"would learn from {other}"
                )
            else:
                lines.append(
                    f"{task}: {kept} of {prompts} prompts had a candidate beating its group's mean by "
                    f"{selection.relative_margin:g}; train.selection: threshold at {selection.threshold:g} would "
                    f"learn from {other}"
                )
    return lines


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

"""Greedy evaluation of a model (base, champion or candidate adapter) on held-out prompts.

Both sides of the gate go through this same function with the same scorers and the
same prompts, so their numbers differ only by the adapter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.protocols import Generator, Progress, SamplingConfig
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.scoring.verifiers import last_number
from taoflow.connectors.sources.formats import parse_record
from taoflow.daemon.round.parts import TaskScorers
from taoflow.daemon.store.round_files import Evaluation
from taoflow.policies.gate import SliceScores

__all__ = ["Evaluation", "evaluate", "golden_rows", "load_golden", "rescore", "slices"]


def evaluate(
    generator: Generator,
    records: Sequence[PromptRecord],
    scorers: TaskScorers,
    *,
    adapter: Path | None,
    max_new_tokens: int,
    progress: Progress | None = None,
) -> Evaluation:
    sampling = SamplingConfig(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    outputs = generator.generate([r.chat for r in records], sampling, adapter=adapter, progress=progress)
    scores: dict[str, list[float | None]] = {}
    answers: list[str] = []
    unscored = 0
    for record, (completion,) in zip(records, outputs, strict=True):
        value = _golden_score(record, completion.text)
        if value is None:
            (value,) = scorers.for_task(record.task).score(record, [completion.text])
        if value is None:
            unscored += 1
        scores.setdefault(record.task, []).append(value)
        answers.append(completion.text)
    return Evaluation(scores=scores, answers=answers, unscored=unscored)


def slices(candidate: Evaluation, champion: Evaluation) -> list[SliceScores]:
    """Per-task summaries of two evaluations of the same records, with each prompt's paired change. A prompt whose
    answer either side could not score is left out of both (and counted): scoring it 0 on one side would make a
    side whose scorer failed look worse, or better, by what it never said."""
    summaries = []
    for t in sorted(candidate.scores):
        pairs = list(zip(candidate.scores[t], champion.scores.get(t, []), strict=True))
        scored = [(a, b) for a, b in pairs if a is not None and b is not None]
        summaries.append(
            SliceScores(
                task=t,
                n=len(scored),
                candidate_mean=sum(a for a, _ in scored) / len(scored) if scored else 0.0,
                champion_mean=sum(b for _, b in scored) / len(scored) if scored else 0.0,
                deltas=tuple(a - b for a, b in scored),
                left_out=len(pairs) - len(scored),
            )
        )
    return summaries


def rescore(evaluation: Evaluation, records: Sequence[PromptRecord], scorers: TaskScorers) -> Evaluation:
    """The same answers judged by other scorers (the gate's own, say), without generating them again."""
    scores: dict[str, list[float | None]] = {}
    unscored = 0
    for record, answer in zip(records, evaluation.answers, strict=True):
        value = _golden_score(record, answer)
        if value is None:
            (value,) = scorers.for_task(record.task).score(record, [answer])
        unscored += value is None
        scores.setdefault(record.task, []).append(value)
    return Evaluation(scores=scores, answers=evaluation.answers, unscored=unscored)


def _golden_score(record: PromptRecord, answer: str) -> float | None:
    expected = record.metadata.get("expected")
    if expected is None:
        return None
    if isinstance(expected, int | float):
        got = last_number(answer)
        return 1.0 if got is not None and math.isclose(got, float(expected), abs_tol=1e-6) else 0.0
    return 1.0 if " ".join(str(expected).casefold().split()) == " ".join(answer.casefold().split()) else 0.0


def load_golden(path: Path) -> list[PromptRecord]:
    """A labelled set: JSONL of any supported record shape, with `expected` beside or in metadata."""
    records = []
    for data, record in golden_rows(path, needs="a valid record"):
        if "expected" in data:
            record = replace(record, metadata={**record.metadata, "expected": data["expected"]})
        records.append(record)
    return records


def golden_rows(
    path: Path, *, needs: str, also: Callable[[dict[str, Any]], Any] | None = None
) -> Iterator[tuple[dict[str, Any], PromptRecord]]:
    """Each row of a golden JSONL file as (its JSON, its record); `also` may check more of a row. A row that does
    not parse fails with its line number and what rows need."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigurationError(f"cannot read golden set {path}: {exc.strerror}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            record = parse_record(data, default_task=str(data.get("task", "default")))
            if also is not None:
                also(data)
        except Exception as exc:
            raise ConfigurationError(f"golden set {path}:{number} is not {needs}: {exc}") from None
        yield data, record

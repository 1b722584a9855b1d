"""`taoflow scorers check`: each configured scorer of each task run on the same candidates, and how far it
agrees with a reference — a golden set's labels, or else a verifier of the task — before it drives training.

Candidates come from a round's `candidates.jsonl` (the latest that has one, or a chosen round), or from a golden
file whose rows carry their own rated candidates: `{"messages": [...], "task": "t", "candidates": [{"text": "…",
"label": 0.8}, …]}`. Nothing is generated here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import InvalidRequest
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.scoring.composite import IN_PROCESS
from taoflow.daemon.round import agreement
from taoflow.daemon.round.evaluation import golden_rows
from taoflow.daemon.round.parts import TaskScorers
from taoflow.daemon.settings import ScorerSpec, Settings
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.state import State

__all__ = ["CheckSet", "check_scorers", "golden_set", "round_set"]

#: Verifier kinds that can stand as a task's reference (they check the answer itself).
_VERIFIERS = ("arithmetic", "json_schema", "sql", "python", "regex")


@dataclass(frozen=True)
class CheckSet:
    """Prompts with their candidates, and (from a golden file) the candidates' labels."""

    source: str
    records: list[PromptRecord]
    candidates: list[list[str]]
    labels: list[list[float | None]] | None = None


def round_set(state: State, model: str, *, round_id: int | None, sample: int) -> CheckSet:
    rounds = RoundStore(state.db, state.rounds_dir)
    if round_id is not None:
        record = rounds.get(round_id)
    else:
        latest = next((r for r in rounds.all(model) if r.files.has_candidates()), None)
        if latest is None:
            raise InvalidRequest(f"no round of {model} has candidates yet: run one, or give --golden FILE")
        record = latest
    if not record.files.has_candidates():
        raise InvalidRequest(f"round {record.id} has no candidates (it stopped at step {record.step})")
    rows = record.files.candidates()
    stored = [p.record for p in state.buffer.get(record.files.prompts().ids) if p.record.request_id in rows]
    chosen = sorted(stored, key=lambda r: r.prompt_hash)[:sample]
    return CheckSet(f"round {record.id}", chosen, [[c.text for c in rows[r.request_id]] for r in chosen])


def golden_set(path: Path, *, sample: int) -> CheckSet:
    records, candidates, labels = [], [], []
    for data, record in golden_rows(path, needs="usable (rows need messages and candidates)", also=_rated):
        rated = _rated(data)
        records.append(record)
        candidates.append([text for text, _ in rated])
        labels.append([label for _, label in rated])
    return CheckSet(str(path), records[:sample], candidates[:sample], labels[:sample])


def _rated(data: dict[str, Any]) -> list[tuple[str, float | None]]:
    return [(str(c["text"]), None if c.get("label") is None else float(c["label"])) for c in data["candidates"]]


def check_scorers(
    settings: Settings, checks: CheckSet, *, policy: tuple[Path, Path | None] | None = None
) -> list[agreement.ScorerReport]:
    """Every scorer of every task in the set (and their composite), against the reference."""
    reports = []
    by_task: dict[str, list[int]] = {}
    for index, record in enumerate(checks.records):
        by_task.setdefault(record.task, []).append(index)
    for task, indices in sorted(by_task.items()):
        records = [checks.records[i] for i in indices]
        answers = [checks.candidates[i] for i in indices]
        lengths = [[len(a) for a in row] for row in answers]
        specs = settings.score.tasks.get(task, settings.score.default)
        runs = [(f"{s.type}#{n}" if _repeated(specs, s) else s.type, [s]) for n, s in enumerate(specs)]
        if len(specs) > 1:
            runs.append(("composite", list(specs)))
        scored = {name: _run(settings, task, group, records, answers, policy) for name, group in runs}
        reference = _reference(checks, indices, specs, scored)
        for name, (values, positions) in scored.items():
            reports.append(
                agreement.report(
                    task,
                    name,
                    values,
                    lengths=lengths,
                    reference=reference[1] if reference is not None and reference[0] != name else None,
                    position_means=positions,
                )
            )
        if checks.labels is not None and reference is not None:
            reports.append(agreement.report(task, reference[0], reference[1], lengths=lengths))
    return reports


def _run(
    settings: Settings,
    task: str,
    specs: list[ScorerSpec],
    records: list[PromptRecord],
    answers: list[list[str]],
    policy: tuple[Path, Path | None] | None,
) -> tuple[list[list[float | None]], list[float | None]]:
    scorers = TaskScorers(
        {task: specs}, specs, sandbox=settings.score.sandbox, cache_dir=settings.storage.state_dir / "judge-cache"
    )
    try:
        if policy is not None:
            scorers.use_policy(*policy)
        scorers.prepare(records, answers)
        values = [list(scorers.for_task(task).score(r, a)) for r, a in zip(records, answers, strict=True)]
        positions = scorers.judges().get(task, {}).get("position_means", [])
    finally:
        scorers.close()
    return values, list(positions)


def _reference(
    checks: CheckSet,
    indices: Sequence[int],
    specs: Sequence[ScorerSpec],
    scored: dict[str, tuple[list[list[float | None]], list[float | None]]],
) -> tuple[str, list[list[float | None]]] | None:
    if checks.labels is not None:
        return "golden labels", [checks.labels[i] for i in indices]
    for n, spec in enumerate(specs):
        if spec.type in _VERIFIERS and spec.type not in IN_PROCESS:
            name = f"{spec.type}#{n}" if _repeated(specs, spec) else spec.type
            return name, scored[name][0]
    return None


def _repeated(specs: Sequence[ScorerSpec], spec: ScorerSpec) -> bool:
    return sum(s.type == spec.type for s in specs) > 1

"""How many untrained prompts each task gives up when the buffer is over its cap: a purely computational
function of the counts per task, the cap and any per-task quotas.

Every task is entitled to an equal share of the cap (water-filling: a task that needs less than its share
leaves the rest to the others); a configured quota caps a task below that. So a loud task cannot crowd a quiet
one out, and the buffer never holds more than the cap. Which prompts go (the oldest, or the ones outside a
uniform sample) is the overflow policy's business; this decides how many.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Evictions", "plan_evictions"]


@dataclass(frozen=True)
class Evictions:
    """Prompts to let go per task, and why, in words."""

    per_task: Mapping[str, int] = field(default_factory=dict)
    reason: str = "within the cap"

    @property
    def total(self) -> int:
        return sum(self.per_task.values())


def plan_evictions(new: Mapping[str, int], *, cap: int, quotas: Mapping[str, int] | None = None) -> Evictions:
    """`new`: untrained prompts per task now. The result keeps at most `cap` in all, each task within its quota."""
    quotas = quotas or {}
    wanted = {task: min(n, quotas.get(task, n)) for task, n in new.items() if n > 0}
    keep: dict[str, int] = {}
    room = cap
    for position, task in enumerate(sorted(wanted, key=lambda t: (wanted[t], t))):
        share = room // (len(wanted) - position)
        keep[task] = min(wanted[task], share)
        room -= keep[task]
    per_task = {task: n - keep.get(task, 0) for task, n in sorted(new.items()) if n - keep.get(task, 0) > 0}
    if not per_task:
        return Evictions()
    over = ", ".join(f"{task} keeps {keep.get(task, 0)} of {new[task]}" for task in per_task)
    return Evictions(per_task, f"{sum(new.values())} untrained prompts over the cap of {cap}: {over}")

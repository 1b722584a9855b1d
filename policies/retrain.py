"""When to start a TAO round: a purely computational function of buffer counts, history and time.

The daemon gathers `RetrainState` (new prompts per task, the last rounds, whether a cron
window has opened, the pause flag) and acts on the `RetrainDecision`; it records every
decision's `rule` as a metric label. Rules, in the order they are checked:

1. paused, or a round already running: no.
2. cooldown after the last round (backoff_seconds instead, and an alert, after
   max_consecutive_rejections gate rejections in a row).
3. staleness: the last round is older than max_staleness_seconds and at least
   staleness_min_prompts new prompts wait: yes, whatever the other rules say.
4. enough new prompts (all tasks together, or per task in per_task mode).
5. schedule, if one is set: the interval since the last round has passed, or a cron
   window has opened since it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["RetrainDecision", "RetrainPolicy", "RetrainState", "decide_retrain", "duration", "when"]


@dataclass(frozen=True)
class RetrainPolicy:
    """The retrain settings (mirrors the `retrain` settings section, less the cron text)."""

    min_new_prompts: int = 100
    per_task: bool = False
    interval_seconds: float | None = None
    scheduled_by_cron: bool = False
    cooldown_seconds: float = 3600.0
    max_staleness_seconds: float | None = None
    staleness_min_prompts: int = 10
    budget_samples: int | None = None
    max_consecutive_rejections: int = 3
    backoff_seconds: float = 86400.0


@dataclass(frozen=True)
class RetrainState:
    """What the policy looks at; times are seconds since the epoch."""

    now: float
    new_prompts: Mapping[str, int] = field(default_factory=dict)
    last_started_at: float | None = None
    last_finished_at: float | None = None
    consecutive_rejections: int = 0
    cron_opened_at: float | None = None  # newest cron window opened since the last round, if any
    next_cron_at: float | None = None
    samples_per_prompt: int = 1
    paused: bool = False
    paused_by: str = "an operator"  # who paused: "an operator: <reason>", "the config (retrain.paused)"
    running: bool = False


@dataclass(frozen=True)
class RetrainDecision:
    trigger: bool
    rule: str  # a small fixed set: the metric label
    reason: str
    tasks: tuple[str, ...] = ()  # the round's tasks; empty: every task
    max_prompts: int | None = None  # from the compute budget
    next_check_at: float | None = None  # when the clock alone could change the answer
    alert: str | None = None


def decide_retrain(policy: RetrainPolicy, state: RetrainState) -> RetrainDecision:
    if state.paused:
        return RetrainDecision(False, "paused", f"paused by {state.paused_by} (`taoflow resume` to continue)")
    if state.running:
        return RetrainDecision(False, "running", "a round is running")
    alert = _backoff_alert(policy, state)
    cooldown = policy.backoff_seconds if alert else policy.cooldown_seconds
    if state.last_finished_at is not None and state.now < state.last_finished_at + cooldown:
        ends = state.last_finished_at + cooldown
        what = "backing off" if alert else "cooldown"
        return RetrainDecision(
            False, "backoff" if alert else "cooldown", f"{what} until {when(ends, state.now)}", (), None, ends, alert
        )
    budget = policy.budget_samples // max(1, state.samples_per_prompt) if policy.budget_samples else None
    waiting = {task: n for task, n in sorted(state.new_prompts.items()) if n > 0}
    total = sum(waiting.values())
    stale = _stale(policy, state)
    if stale and total >= policy.staleness_min_prompts:
        return RetrainDecision(True, "staleness", f"{stale}; {total} new prompts wait", (), budget, None, alert)
    tasks, short = _eligible(policy, waiting, total)
    if short:
        return RetrainDecision(False, "min_prompts", short, (), None, None, alert)
    due, why, next_at = _schedule(policy, state)
    if not due:
        return RetrainDecision(False, "schedule", why, (), None, next_at, alert)
    counted = ", ".join(f"{t}: {waiting[t]}" for t in tasks) if tasks else f"{total} in all tasks"
    return RetrainDecision(True, "ready", f"{why}; new prompts {counted}", tasks, budget, None, alert)


def _backoff_alert(policy: RetrainPolicy, state: RetrainState) -> str | None:
    if state.consecutive_rejections < policy.max_consecutive_rejections:
        return None
    return (
        f"{state.consecutive_rejections} consecutive gate rejections: automatic rounds back off to one per "
        f"{policy.backoff_seconds:.0f} s; check the scorers and the data, then resume or trigger by hand"
    )


def _stale(policy: RetrainPolicy, state: RetrainState) -> str | None:
    if policy.max_staleness_seconds is None or state.last_started_at is None:
        return None
    age = state.now - state.last_started_at
    if age < policy.max_staleness_seconds:
        return None
    return f"the last round started {age:.0f} s ago (max staleness {policy.max_staleness_seconds:.0f} s)"


def _eligible(policy: RetrainPolicy, waiting: Mapping[str, int], total: int) -> tuple[tuple[str, ...], str | None]:
    """The round's tasks (empty: all), or why there are not enough new prompts."""
    if not policy.per_task:
        if total >= policy.min_new_prompts:
            return (), None
        return (), f"{total} of {policy.min_new_prompts} new prompts"
    ready = tuple(task for task, n in waiting.items() if n >= policy.min_new_prompts)
    if ready:
        return ready, None
    counts = ", ".join(f"{t}: {n}" for t, n in waiting.items()) or "none"
    return (), f"no task has {policy.min_new_prompts} new prompts ({counts})"


def _schedule(policy: RetrainPolicy, state: RetrainState) -> tuple[bool, str, float | None]:
    if policy.interval_seconds is None and not policy.scheduled_by_cron:
        return True, "enough new prompts", None
    if policy.scheduled_by_cron and state.cron_opened_at is not None:
        return True, f"cron window opened at {when(state.cron_opened_at, state.now)}", None
    interval_at = None
    if policy.interval_seconds is not None:
        if state.last_started_at is None:
            return True, "first round on the interval schedule", None
        interval_at = state.last_started_at + policy.interval_seconds
        if state.now >= interval_at:
            return True, f"{policy.interval_seconds:.0f} s since the last round", None
    candidates = [t for t in (interval_at, state.next_cron_at) if t is not None]
    next_at = min(candidates) if candidates else None
    at = when(next_at, state.now) if next_at is not None else "the next cron window"
    return False, f"enough new prompts; next scheduled at {at}", next_at


def when(at: float, now: float) -> str:
    """A moment as people read it: UTC time and how far from `now` (`2026-11-29 10:15 UTC, in 58 min`)."""
    stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = at - now
    return f"{stamp}, {'in ' if delta >= 0 else ''}{duration(abs(delta))}{'' if delta >= 0 else ' ago'}"


def duration(seconds: float) -> str:
    """A length of time as people say it: 45 s, 12 min, 3.5 h, 2.0 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"

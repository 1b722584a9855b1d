"""When the daemon starts a round: thresholds, schedules, cooldowns, back-off."""

from __future__ import annotations

from datetime import UTC
from typing import Literal

from pydantic import Field, field_validator

from taoflow.daemon.settings.base import Section

__all__ = ["RetrainSettings"]


class RetrainSettings(Section):
    """When the daemon starts a round (policies/retrain.py decides; reloaded from the file without restart)."""

    min_new_prompts: int = Field(100, ge=1)
    """New (never trained on) prompts a round needs: in all tasks together, or per task in per_task mode."""
    mode: Literal["multi_task", "per_task"] = "multi_task"
    """multi_task: one round over every task; per_task: a round over the tasks that each have min_new_prompts."""
    interval_seconds: float | None = Field(None, gt=0)
    """If set, a round is due only once this long has passed since the last one started."""
    cron: str | None = None
    """If set (5-field crontab, UTC), a round is due once per window opened since the last round, e.g. `0 2 * * *`."""
    cooldown_seconds: float = Field(3600.0, ge=0)
    """Quiet time after a round ends, whatever else says."""
    max_staleness_seconds: float | None = Field(None, gt=0)
    """If set, run anyway once the last round is this old and staleness_min_prompts new prompts wait."""
    staleness_min_prompts: int = Field(10, ge=1)
    """New prompts the staleness rule needs."""
    budget_samples: int | None = Field(None, ge=1)
    """Tuning compute per round in prompts x samples: a round takes at most budget_samples // generate.n prompts."""
    max_consecutive_rejections: int = Field(3, ge=1)
    """Gate rejections in a row after which the policy backs off (cooldown becomes backoff_seconds) and alerts."""
    backoff_seconds: float = Field(86400.0, ge=0)
    """Cooldown while backed off; a manual trigger or `resume` clears the back-off."""
    paused: bool = False
    """Start paused (no automatic rounds); the admin API pauses and resumes at runtime."""
    evaluate_interval_seconds: float = Field(30.0, gt=0)
    """How often the scheduler asks the policy."""

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        """Parsed by the scheduler's own cron parser, so what loads is what the scheduler runs."""
        if value is None:
            return value
        if len(value.split()) != 5:
            raise ValueError("cron must have 5 fields: minute hour day month weekday (UTC)")
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid crontab (minute hour day month weekday, UTC): {exc}") from None
        return value

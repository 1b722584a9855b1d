"""What happens to a record before it is buffered: filters, redaction, the held-out split, the buffer's cap."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from taoflow.connectors.sources.redaction import REDACTION_KINDS
from taoflow.daemon.settings.base import Section, TokenSource
from taoflow.policies.ingest_filter import TASK_NAME, valid_task

__all__ = ["IngestSettings"]


class IngestSettings(Section):
    default_task: str = Field("default", pattern=TASK_NAME)
    """Task name for records that carry no task, endpoint or model name (and, by default, for unknown tasks)."""
    tasks: list[str] | None = None
    """The tasks prompts are buffered for: a record naming another (or a name over 128 characters, or with control
    characters) is handled by `unknown_task`, counted. Default: the tasks of score.tasks, with task_map's targets
    and default_task; with no score.tasks either, every task a log names (the gateway then honours no client's
    x-taoflow-task)."""
    unknown_task: Literal["default", "skip"] = "default"
    """A record of an unknown task: buffered under default_task (counted as relabelled), or skipped (`unknown_task`)."""
    redact: list[str] = Field(default_factory=lambda: ["secrets", "emails"])
    """Redact before storing (ingest and the gateway's capture alike): any of `secrets`, `emails`, `phones`. On by
    default for secrets and e-mail addresses (prompts, answers, metadata: a sensitive key's whole value); `[]`
    stores text as logged."""
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    """Share of each task's distinct prompts held out for the eval gate (never trained on)."""
    heldout_max_per_task: int = Field(64, ge=0)
    """Cap on held-out prompts per task; once reached, new prompts all go to training."""
    max_prompt_chars: int = Field(16_000, gt=0)
    """Longer prompts are skipped (counted as `too_long`) instead of buffered."""
    keep_status: list[int] = Field(default_factory=lambda: [200])
    """Only records whose logged status_code is one of these are buffered ([] keeps all)."""
    sample_rates: dict[str, float] = Field(default_factory=dict)
    """Share of each high-volume task to keep, e.g. {support: 0.1}; by request-id hash, so replays agree."""
    sample_key: TokenSource = TokenSource()
    """A secret the daemon and every gateway hold (the chart gives them the gateway token): sampling (here and
    gateway.capture.sample_rate) hashes request ids with it, so a client picking its x-request-id cannot pick
    whether it is kept. Unset: a plain hash."""
    task_map: dict[str, str] = Field(default_factory=dict)
    """Rename tasks: served entity / endpoint / model name -> task name."""
    buffer_cap: int = Field(100_000, ge=1)
    """Most untrained prompts to hold (held-out ones aside); past it, `overflow` decides."""
    overflow: Literal["evict_oldest", "reservoir", "pause"] = "evict_oldest"
    """At the cap: keep each task's newest prompts (evict_oldest), a uniform sample of them (reservoir), or pause."""
    task_quotas: dict[str, int] = Field(default_factory=dict)
    """Most untrained prompts per task, below its equal share of buffer_cap (a loud task cannot crowd others out)."""

    @field_validator("redact")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(REDACTION_KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kinds {sorted(unknown)}; choose from {list(REDACTION_KINDS)}")
        return value

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, value: list[str] | None) -> list[str] | None:
        bad = [t for t in value or () if not valid_task(t)]
        if bad:
            raise ValueError(f"task names {bad[:3]}: 1-128 characters, no control characters")
        return value

"""Scorers per task (verifiers, judges, reward models) and the sandbox verifiers run in."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from taoflow.daemon.settings.base import Section

__all__ = ["SandboxSettings", "ScoreSettings", "ScorerSpec"]


class ScorerSpec(Section):
    type: Literal[
        "arithmetic",
        "json_schema",
        "regex",
        "sql",
        "python",
        "self_consistency",
        "length",
        "judge",
        "reward_model",
        "self_certainty",
        "tool_call",
    ]
    """Scorer kind. `judge` (an LLM judge over an OpenAI-compatible endpoint), `reward_model` (a local
    sequence-classification model) and `self_certainty` (the policy's own confidence) run in the round's process;
    the verifiers run in the sandbox."""
    weight: float = Field(1.0, gt=0.0)
    """Weight in the composite (weights are normalised over the scorers that answered)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Scorer parameters, e.g. `schema` for json_schema, `pattern` for regex, `callable` for python."""


class SandboxSettings(Section):
    """Where scorers run: a worker process with a deadline and a memory cap, no writes, no network."""

    enabled: bool = True
    """Score in a confined, killable worker (off: in the round's own process, only for trusted output)."""
    seconds_per_candidate: float = Field(2.0, gt=0)
    """Seconds per answer to score a prompt's answers; past that the worker is killed and they stay unscored."""
    memory_mb: int = Field(1024, ge=64)
    """Address-space cap of a scoring worker (an allocation past it fails inside the worker)."""
    startup_seconds: float = Field(60.0, gt=0)
    """Longest a new scoring worker may take to get ready (its scorers built); the answers' clock starts after."""


class ScoreSettings(Section):
    tasks: dict[str, list[ScorerSpec]] = Field(default_factory=dict)
    """Scorers per task name."""
    default: list[ScorerSpec] = Field(default_factory=lambda: [ScorerSpec(type="self_consistency")])
    """Scorers for tasks not listed in `tasks`."""
    sandbox: SandboxSettings = SandboxSettings()
    """Limits on scoring model output (time, memory, side effects)."""

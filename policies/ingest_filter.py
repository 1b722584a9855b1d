"""Which parsed log records to buffer: status, sampling, length and task mapping.

A purely computational function: a record's facts in, an `IngestDecision` out. A skip
is deliberate (configured), so it is counted by reason, not dead-lettered.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["TASK_NAME", "IngestDecision", "IngestFilter", "decide_ingest", "sampled_in", "valid_task"]

#: A task name as taoflow keeps it (a metric label, a key of the settings): 1-128 characters, no control characters.
_TASK_BODY = r"[^\x00-\x1f\x7f]{1,128}"
TASK_NAME = f"^{_TASK_BODY}$"
_TASK_NAME = re.compile(_TASK_BODY)


@dataclass(frozen=True)
class IngestFilter:
    """The ingest filter settings (mirrors the `ingest` settings section)."""

    keep_status: frozenset[int] = frozenset({200})
    sample_rates: Mapping[str, float] = field(default_factory=dict)
    max_prompt_chars: int = 16_000
    task_map: Mapping[str, str] = field(default_factory=dict)
    #: The tasks buffered (None: any valid name); another becomes `default_task`, or is skipped when `unknown` is
    #: "skip".
    known_tasks: frozenset[str] | None = None
    #: Sampling's secret (ingest.sample_key): with it, a client that picks its request id cannot pick its fate.
    sample_key: bytes = b""
    default_task: str = "default"
    unknown: str = "default"
    #: Whether rounds learn tool use (`model.tool_call_parser` is set): without it, a prompt that offers tools or holds
    #: calls is skipped rather than stored for rounds that would train it toward text.
    tools: bool = False


@dataclass(frozen=True)
class IngestDecision:
    keep: bool
    task: str
    reason: str  # "kept" or the skip reason: a small fixed set, usable as a metric label
    relabelled: bool = False  # an unknown task, buffered under the default task


def decide_ingest(
    *,
    request_id: str,
    task: str,
    status_code: int | None,
    prompt_chars: int,
    rules: IngestFilter,
    uses_tools: bool = False,
) -> IngestDecision:
    """Map the task name (an unknown one to the default task, or skipped), then drop failed requests, agent prompts
    that rounds would not learn from, over-long prompts and the unsampled share."""
    task = rules.task_map.get(task, task)
    relabelled = False
    if not valid_task(task) or (rules.known_tasks is not None and task not in rules.known_tasks):
        if rules.unknown == "skip":
            return IngestDecision(False, task[:128], "unknown_task")
        task, relabelled = rules.default_task, True
    if status_code is not None and rules.keep_status and status_code not in rules.keep_status:
        return IngestDecision(False, task, "status_code")
    if uses_tools and not rules.tools:
        return IngestDecision(False, task, "unsupported_tools")
    if prompt_chars > rules.max_prompt_chars:
        return IngestDecision(False, task, "too_long")
    rate = rules.sample_rates.get(task, 1.0)
    if not sampled_in(request_id, rate, key=rules.sample_key):
        return IngestDecision(False, task, "sampled_out")
    return IngestDecision(True, task, "kept", relabelled)


def valid_task(task: str) -> bool:
    """Whether `task` may be kept as a task name (bounded, no control characters)."""
    return _TASK_NAME.fullmatch(task) is not None


def sampled_in(request_id: str, rate: float, *, key: bytes = b"") -> bool:
    """Whether `request_id` falls in the kept `rate` share (the same answer wherever it is asked with `key`)."""
    return rate >= 1.0 or _bucket(request_id, key) < rate


def _bucket(request_id: str, key: bytes) -> float:
    # By request id, not at random: a replayed record gets the same verdict, so replays stay idempotent. Keyed
    # (HMAC) where a secret is set: a plain hash lets whoever picks the id find one that is always kept.
    if key:
        digest = hmac.new(key, request_id.encode(), hashlib.sha256).hexdigest()
    else:
        digest = hashlib.sha256(request_id.encode()).hexdigest()
    return int(digest[:8], 16) / 0x1_0000_0000

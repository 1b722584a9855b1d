"""taoflow's exceptions, in one place.

    TaoflowError
    ├── ConfigurationError      bad settings or a missing dependency: fix the config, then restart
    ├── RecordError             one log record could not be parsed (it goes to the dead letter)
    ├── PermanentError          an operation failed and retrying will not help
    │   ├── RegistryError       an adapter version or state transition that does not exist
    │   │   └── UnknownVersion  no adapter has that version (or the alias points nowhere yet)
    │   ├── ArtifactError       an adapter directory that is missing, corrupt or unsafe to read
    │   ├── RoundError          a round that cannot run or continue (no data, nothing trained)
    │   │   ├── NothingToTrain  no new training prompts: no round was started, none is recorded
    │   │   └── NothingToLearn  the round's candidates gave no training example: recorded as skipped
    │   └── DeployError         a rollout that must stop: a replica refused the adapter, smoke eval failed
    │   └── InvalidRequest      an operator's request names something that does not exist (a task)
    └── TemporaryError          an operation failed and may succeed later (`delay` seconds)
        ├── ReplicaUnavailable  a serving replica did not answer (down, restarting, overloaded)
        └── Busy                a one-at-a-time resource (a round, the fleet) is taken; try again later

Every message says what happened and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "Busy",
    "ConfigurationError",
    "DeployError",
    "ErasureIncomplete",
    "InvalidRequest",
    "NothingToLearn",
    "NothingToTrain",
    "PermanentError",
    "RecordError",
    "RegistryError",
    "ReplicaUnavailable",
    "RoundError",
    "TaoflowError",
    "TemporaryError",
    "UnknownVersion",
]


class TaoflowError(Exception):
    """Base class of every error taoflow raises on purpose."""


class ConfigurationError(TaoflowError):
    """Settings are invalid or a needed component is not installed."""


class RecordError(TaoflowError):
    """A log record is malformed; `reason` is short and stable enough to count by."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class UnsupportedRecord(RecordError):
    """A well-formed record of a shape taoflow cannot store faithfully yet (tool calls, say): skipped and counted by
    its reason, not dead-lettered (it is not malformed), and never stored altered."""


class PermanentError(TaoflowError):
    """Failed in a way that retrying will not fix."""


class RegistryError(PermanentError):
    """An unknown adapter version, alias or a forbidden state transition."""


class UnknownVersion(RegistryError):
    """No adapter has this version, or the alias asked for points to none yet."""


class ArtifactError(PermanentError):
    """An adapter artifact is missing, unreadable or would escape its store."""


class RoundError(PermanentError):
    """A round cannot run or continue."""


class NothingToTrain(RoundError):
    """The buffer holds no new training prompts (for the tasks asked for): no round was started."""


class NothingToLearn(RoundError):
    """No prompt of the round had a candidate worth learning from: the round ends as skipped, not failed."""


class DeployError(PermanentError):
    """A rollout step failed for a reason that waiting will not fix; the deploy reverts."""


class ErasureIncomplete(PermanentError):
    """An erasure left copies it could not reach (a round's files that cannot be found): it says where."""


class InvalidRequest(PermanentError):
    """An operator's request names something that does not exist; the message names what does."""


class TemporaryError(TaoflowError):
    """Failed now; retrying after `delay` seconds may succeed."""

    def __init__(self, message: str, *, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class ReplicaUnavailable(TemporaryError):
    """A serving replica is unreachable or answered 5xx; `replica` names it."""

    def __init__(self, replica: str, message: str, *, delay: float = 2.0) -> None:
        super().__init__(f"replica {replica}: {message}", delay=delay)
        self.replica = replica


class Busy(TemporaryError):
    """A one-at-a-time resource (the round, the fleet) is held by someone else; try again later."""

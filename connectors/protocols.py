"""The small interfaces between the daemon and the outside world.

Each Protocol has one real implementation in this package; the wiring that picks it
lives in `taoflow.daemon.wiring`. Tests swap an implementation by passing another
object of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from taoflow.connectors.errors import DeployError
from taoflow.connectors.records import Chat, Message, PromptRecord

__all__ = [
    "ArtifactStore",
    "Completion",
    "Generator",
    "Progress",
    "ReplicaView",
    "SamplingConfig",
    "Scorer",
    "ServingReplica",
    "Source",
    "SourceItem",
    "replace_adapter",
]

#: Called with the number of units just finished (prompts, steps); drives progress bars.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class SamplingConfig:
    """How candidates are drawn. `n` candidates per prompt; temperature 0 means greedy."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    """One generated answer and what it cost."""

    text: str
    num_tokens: int
    finished: bool  # False when max_new_tokens cut it off


class Generator(Protocol):
    """Draws completions for chat prompts, optionally through a LoRA adapter."""

    def generate(
        self,
        conversations: Sequence[Chat | Sequence[Message]],
        sampling: SamplingConfig,
        *,
        adapter: Path | None = None,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        """Return `sampling.n` completions for each conversation (with the tools a `Chat` offers), in input
        order."""
        ...

    def close(self) -> None:
        """Free the model or engine (its accelerator memory); the generator is not used afterwards."""
        ...


class Scorer(Protocol):
    """Rates each candidate answer to one prompt with a float in [0, 1].

    Scorers see all candidates of a prompt at once so that self-consistency can
    compare them. A scorer may raise or return a non-number: the composite scorer
    marks that candidate unscored and counts it.
    """

    name: str

    def score(self, record: PromptRecord, responses: Sequence[str]) -> Sequence[float | None]: ...


@dataclass(frozen=True)
class SourceItem:
    """One raw record as read from a source, with where it came from (for the dead letter).

    `error` is set when the source itself could not read this part of its input (a truncated
    gzip stream, an unreadable file): the item goes straight to the dead letter. `skip` is set
    for input that holds no records by design (an object of another type): counted as skipped
    with that reason.
    """

    payload: bytes
    origin: str
    error: str | None = None
    skip: str | None = None


class Source(Protocol):
    """A stream of raw log records."""

    name: str

    def read(self) -> Iterator[SourceItem]: ...


class ArtifactStore(Protocol):
    """Stores adapter directories by version name."""

    def put(self, version: str, directory: Path) -> str:
        """Copy `directory` in as `version`; return its URI. Atomic: all or nothing."""
        ...

    def fetch(self, version: str) -> Path:
        """Return a local directory holding `version` (the store's own or a cached copy)."""
        ...

    def exists(self, version: str) -> bool: ...

    def uri(self, version: str) -> str:
        """Where the version is stored (file:// or s3://), recorded in the registry."""
        ...


@dataclass(frozen=True)
class ReplicaView:
    """What one serving replica serves right now: its base model and adapter name -> path."""

    base: str
    adapters: dict[str, str] = field(default_factory=dict)


class ServingReplica(Protocol):
    """One server of the serving fleet, with a runtime LoRA API and an OpenAI-compatible API."""

    url: str

    def view(self) -> ReplicaView: ...

    def load(self, name: str, path: str) -> None: ...

    def unload(self, name: str) -> bool: ...

    def metrics(self) -> str: ...

    def chat(self, model: str, chat: Chat, sampling: SamplingConfig) -> list[Completion]: ...

    def close(self) -> None: ...


def replace_adapter(replica: ServingReplica, name: str, path: str, *, served: str | None) -> None:
    """Make `replica` serve `path` as `name`, which serves `served` now (None: nothing).

    Never in place: vLLM keeps the in-place flag on the cached request and re-reads the adapter at every step,
    so a name reloaded in place stays ~25 % slower until the server restarts (measured: bench/swap.py). The
    name is unloaded, then loaded from the new path — a window of a few milliseconds in which a request for
    the name gets a 404. A load that fails reinstates `served`, so the replica keeps serving what it served.
    """
    if served == path:
        return
    if served is not None:
        replica.unload(name)
    try:
        replica.load(name, path)
    except DeployError:
        if served is not None:
            replica.load(name, served)
        raise

"""Candidate generation through the serving fleet: `n=` completions per request over the
OpenAI API, so a production round needs no GPU of its own for generation.

An adapter directory is served under its directory name (the version); a replica that
does not serve it yet is asked to load it first. Requests are spread over the replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from taoflow.connectors.protocols import Completion, Progress, SamplingConfig, ServingReplica, replace_adapter
from taoflow.connectors.records import Chat, Message, as_chat

__all__ = ["FleetGenerator"]


class FleetGenerator:
    """A `Generator` over vLLM replicas; `served_name` pins every request to one served model."""

    def __init__(
        self,
        replicas: Sequence[ServingReplica],
        *,
        concurrency: int = 8,
        path_on_servers: Callable[[Path], str] = str,
        served_name: str | None = None,
    ) -> None:
        if not replicas:
            raise ValueError("the fleet generator needs at least one replica")
        self._replicas = list(replicas)
        self._concurrency = concurrency
        self._path_on_servers = path_on_servers
        self._served_name = served_name

    def close(self) -> None:
        """Nothing to free: the replicas belong to the fleet, and the adapters loaded on them stay for reuse."""

    def generate(
        self,
        conversations: Sequence[Chat | Sequence[Message]],
        sampling: SamplingConfig,
        *,
        adapter: Path | None = None,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        names = [self._serve(replica, adapter) for replica in self._replicas]

        def one(index: int) -> list[Completion]:
            slot = index % len(self._replicas)
            # Each prompt gets its own seed: identical seeds would make every prompt's samples alike.
            # vLLM refuses n > 1 with greedy decoding: greedy answers are all the same, so ask once.
            greedy = sampling.temperature == 0.0
            seeded = SamplingConfig(
                1 if greedy else sampling.n,
                sampling.temperature,
                sampling.top_p,
                sampling.max_new_tokens,
                sampling.seed + index,
            )
            completions = self._replicas[slot].chat(names[slot], as_chat(conversations[index]), seeded)
            if greedy:
                completions = completions * sampling.n
            if progress is not None:
                progress(1)
            return completions

        with ThreadPoolExecutor(self._concurrency, thread_name_prefix="fleet-generate") as pool:
            return list(pool.map(one, range(len(conversations))))

    def _serve(self, replica: ServingReplica, adapter: Path | None) -> str:
        """The model name to ask `replica` for, loading the adapter there first if needed."""
        if self._served_name is not None:
            return self._served_name
        view = replica.view()
        if adapter is None:
            return view.base
        name, path = adapter.name, self._path_on_servers(adapter)
        if view.adapters.get(name) != path:
            replace_adapter(replica, name, path, served=view.adapters.get(name))
        return name

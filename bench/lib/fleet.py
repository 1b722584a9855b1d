"""What the fleet benchmarks share: two real vLLM CPU servers (or running ones), two adapters that answer one
question differently, client load on the stable name, latency figures."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["MODEL", "QUESTION", "Load", "percentile", "replicas", "run_clients", "steady_latency", "train_adapters"]

MODEL = "support-bot"
QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]


@contextmanager
def replicas(base: Path, root: Path, urls: list[str] | None = None) -> Iterator[list[str]]:
    """Two real vLLM CPU servers of `base` (.venv-vllm, a core each), stopped on every path; or the servers at
    `urls` (of the same model, runtime LoRA on), left as they are: CI's smoke runs reuse the test session's."""
    if urls:
        yield urls
        return
    from tests.support.servers import vllm_servers

    with vllm_servers(base, root) as servers:
        yield [s.url for s in servers]


class Load:
    """Clients calling MODEL on every replica until stopped; records (start, end, status)."""

    def __init__(self, urls: list[str], clients: int, *, max_tokens: int = 16) -> None:
        import httpx

        self.results: list[tuple[float, float, int]] = []
        self._max_tokens = max_tokens
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=120)
        self._threads = [threading.Thread(target=self._run, args=(u,)) for u in urls for _ in range(clients)]

    def _run(self, url: str) -> None:
        import httpx

        body = {"model": MODEL, "messages": QUESTION, "max_tokens": self._max_tokens, "temperature": 0}
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status = self._http.post(url + "/v1/chat/completions", json=body).status_code
            except httpx.HTTPError:
                status = 0
            self.results.append((started, time.monotonic(), status))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def run_clients(ask: Callable[[Any], tuple[float, int]], clients: int, requests: int) -> tuple[list[float], int]:
    """`requests` calls of `ask(client)` (its latency and status) from `clients` concurrent threads, each with an
    httpx client of its own; the latencies of the 200s, and how many failed."""
    import httpx

    latencies: list[float] = []
    failed = 0
    lock = threading.Lock()
    left = [requests]

    def worker() -> None:
        nonlocal failed
        with httpx.Client(timeout=300) as client:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                seconds, status = ask(client)
                with lock:
                    if status == 200:
                        latencies.append(seconds)
                    else:
                        failed += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failed


def steady_latency(url: str, requests: int = 10) -> float:
    """Median latency of sequential requests of exactly 32 generated tokens (greedy), nothing else running."""
    import httpx

    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 32, "min_tokens": 32, "temperature": 0}
    times = []
    for _ in range(requests + 1):
        started = time.monotonic()
        response = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == 32
        times.append(time.monotonic() - started)
    return statistics.median(times[1:])  # the first one warms up


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def train_adapters(root: Path, base: Path, *, epochs: float = 6.0) -> dict[str, Path]:
    from taoflow.connectors.records import Message
    from taoflow.connectors.training.lora import DistillExample, TrainingConfig, train_adapter

    question = (Message("user", "What is 12 + 30?"),)
    config = TrainingConfig(epochs=epochs, batch_size=4, learning_rate=3e-3, save_steps=1000)
    answers = {"v1": "The answer is 42, my friend.", "v2": "The answer is 43, buddy."}
    return {
        name: train_adapter(base, [DistillExample(question, text)] * 8, config, work_dir=root / name).adapter_dir
        for name, text in answers.items()
    }

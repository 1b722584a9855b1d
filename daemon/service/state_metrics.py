"""What `/metrics` reads from the state database at scrape time, a reader per concern: the scraped numbers are the
buffer, the rounds, the registry and the deploys exactly, read through the store's own methods."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from taoflow.connectors.scoring.judge import UNSCORED_REASONS
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.deploys import DeployStore
from taoflow.daemon.store.erasure import erasure_counts, trained_by_version
from taoflow.daemon.store.registry import Registry
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.storage import Database

__all__ = ["WATCH_RULES", "StateCollector"]

#: The post-deploy watch's rollback rules (policies/rollout.py).
WATCH_RULES = ("error_rate", "latency", "live_score")


class StateCollector(Collector):
    """Reads the state database at scrape time, one reader per concern."""

    def __init__(self, db: Database, buffer: PromptBuffer, registry: Registry, model: str) -> None:
        self._db = db
        self._buffer = buffer
        self._registry = registry
        self._rounds = RoundStore(db, Path())
        self._deploys = DeployStore(db)
        self._model = model

    def describe(self) -> list[Metric]:
        return []  # collected lazily; no describe-time database read at registration

    def collect(self) -> Iterator[Metric]:
        yield from buffer_families(self._buffer, now=time.time())
        yield from erasure_families(self._db)
        yield from round_families(self._rounds, self._model)
        yield from registry_families(self._registry, self._model)
        yield from deploy_families(self._deploys, self._model)
        yield GaugeMetricFamily(
            "taoflow_database_size_bytes", "Size of the state database file (its WAL aside).", value=self._db.size()
        )


def buffer_families(buffer: PromptBuffer, *, now: float) -> Iterator[Metric]:
    buffered = GaugeMetricFamily("taoflow_buffer_prompts", "Prompts in the buffer.", labels=["task", "split"])
    new = GaugeMetricFamily("taoflow_buffer_new_prompts", "Training prompts no round has used yet.", labels=["task"])
    tasks = buffer.stats().tasks
    for task, counts in tasks.items():
        buffered.add_metric([task, "train"], counts.train)
        buffered.add_metric([task, "heldout"], counts.heldout)
        new.add_metric([task], counts.new)
    yield buffered
    yield new
    dead = GaugeMetricFamily("taoflow_dead_letters", "Records in the dead-letter table.", labels=["source"])
    for source, count in buffer.dead_letter_counts().items():
        dead.add_metric([source], count)
    yield dead
    evicted = CounterMetricFamily(
        "taoflow_buffer_evicted",
        "Untrained prompts let go to keep the buffer within its cap, by task and overflow policy.",
        labels=["task", "reason"],
    )
    counted = buffer.evictions()
    for task in tasks:  # from zero: a task's first eviction is an increase
        counted.setdefault((task, buffer.overflow), 0)
    for (task, reason), count in sorted(counted.items()):
        evicted.add_metric([task, reason], count)
    yield evicted
    age = GaugeMetricFamily(
        "taoflow_buffer_prompt_age_seconds",
        "Age of the untrained prompts per task: the newest, about the median, the oldest.",
        labels=["task", "which"],
    )
    for task, moments in sorted(buffer.freshness().items()):
        for which, at in zip(("newest", "median", "oldest"), moments, strict=True):
            age.add_metric([task, which], max(0.0, now - at))
    yield age


def erasure_families(db: Database) -> Iterator[Metric]:
    erasures = GaugeMetricFamily(
        "taoflow_erased_prompts",
        "Prompts erased at their source's request: before any round trained on them, or after (tombstones).",
        labels=["when"],
    )
    for when, erased in sorted(erasure_counts(db).items()):
        erasures.add_metric([when], erased)
    yield erasures
    trained = GaugeMetricFamily(
        "taoflow_adapter_erased_prompts",
        "Erased prompts each adapter was trained on, with its registry state (champion: it serves them).",
        labels=["version", "state"],
    )
    for (adapter, state), held in sorted(trained_by_version(db).items()):
        trained.add_metric([adapter, state], held)
    yield trained


def round_families(rounds: RoundStore, model: str) -> Iterator[Metric]:
    results = CounterMetricFamily("taoflow_rounds", "Rounds by result.", labels=["result"])
    gates = CounterMetricFamily(
        "taoflow_gate_decisions", "Gate decisions by result and reason.", labels=["result", "reason"]
    )
    round_results: dict[str, int] = {}
    gate_results: dict[tuple[str, str], int] = {}
    judging = _JudgeTotals()
    for record in rounds.all(model):
        summary = record.summary
        if summary.score is not None:
            judging.add(summary.score.judges)
        gate = summary.gate
        result = record.status
        if record.status == "done":
            result = "promoted" if gate is not None and gate.promoted else "not_promoted"
        round_results[result] = round_results.get(result, 0) + 1
        if gate is not None:
            key = ("passed" if gate.passed else "rejected", gate.outcome)
            gate_results[key] = gate_results.get(key, 0) + 1
    for result, count in sorted(round_results.items()):
        results.add_metric([result], count)
    for (result, reason), count in sorted(gate_results.items()):
        gates.add_metric([result, reason], count)
    yield results
    yield gates
    yield from judging.metrics()
    last_gate = GaugeMetricFamily(
        "taoflow_gate_last_mean_score",
        "Mean held-out score of the last gated round's candidate and of the champion it was judged against.",
        labels=["side"],
    )
    bound = GaugeMetricFamily(
        "taoflow_gate_last_improvement_lower_bound",
        "Lower confidence bound of the last gated round's mean held-out improvement (gate.confidence).",
    )
    judged = rounds.last_gated(model)
    gate = judged.summary.gate if judged is not None else None
    if gate is not None:
        means = gate.means()
        if means is not None:
            last_gate.add_metric(["candidate"], means[0])
            last_gate.add_metric(["champion"], means[1])
        if gate.noise is not None:
            bound.add_metric([], gate.noise.lower)
    yield last_gate
    yield bound


def registry_families(registry: Registry, model: str) -> Iterator[Metric]:
    events = CounterMetricFamily(
        "taoflow_adapter_transitions",
        "Registry transitions by kind: promote, rollback (a retired adapter reinstated), gated, rejected, retired.",
        labels=["kind"],
    )
    kinds: dict[str, int] = {}
    for (before, after), count in registry.transition_counts().items():
        kind = ("rollback" if before == "retired" else "promote") if after == "champion" else after
        kinds[kind] = kinds.get(kind, 0) + count
    for kind, count in sorted(kinds.items()):
        events.add_metric([kind], count)
    yield events
    rolled_back = registry.last_rollback_at(model)
    if rolled_back is not None:
        yield GaugeMetricFamily(
            "taoflow_last_rollback_timestamp_seconds",
            "Unix time of the last rollback that made an earlier adapter champion again (by the watch or by hand).",
            value=rolled_back,
        )
    champion = GaugeMetricFamily(
        "taoflow_champion_info", "The champion adapter (value 1).", labels=["model", "version"]
    )
    version = registry.alias(model, "champion")
    if version is not None:
        champion.add_metric([model, version], 1)
    yield champion


def deploy_families(deploys: DeployStore, model: str) -> Iterator[Metric]:
    counted = CounterMetricFamily(
        "taoflow_deploys", "Fleet deploys by kind, trigger and status.", labels=["kind", "trigger", "status"]
    )
    for (kind, trigger, status), count in sorted(deploys.counts(model).items()):
        counted.add_metric([kind, trigger, status], count)
    yield counted
    watch_rollbacks = CounterMetricFamily(
        "taoflow_watch_rollbacks", "Deploys the post-deploy watch rolled back, by rule.", labels=["rule"]
    )
    rules = dict.fromkeys(WATCH_RULES, 0)  # every rule from zero: the first rollback by a rule is an increase
    for deploy in deploys.watch_rollbacks(model):
        rule = str(deploy.detail.get("watch", {}).get("rule", "unknown"))
        rules[rule] = rules.get(rule, 0) + 1
    for rule, count in sorted(rules.items()):
        watch_rollbacks.add_metric([rule], count)
    yield watch_rollbacks
    yield GaugeMetricFamily(
        "taoflow_deploy_running", "1 while a deploy is rolling out or reverting.", value=deploys.running_count(model)
    )


class _JudgeTotals:
    """The LLM judges' work over every round's score step, as counters (each round records its own figures)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.unscored: dict[str, int] = {}
        self.tokens = {"prompt": 0, "completion": 0}
        self.cached = 0

    def add(self, judges: dict[str, dict[str, Any]]) -> None:
        for judge in judges.values():
            for outcome, count in judge.get("calls", {}).items():
                self.calls[outcome] = self.calls.get(outcome, 0) + int(count)
            for reason, count in judge.get("failures", {}).items():
                self.unscored[reason] = self.unscored.get(reason, 0) + int(count)
            self.tokens["prompt"] += int(judge.get("prompt_tokens", 0))
            self.tokens["completion"] += int(judge.get("completion_tokens", 0))
            self.cached += int(judge.get("cached", 0))

    def metrics(self) -> Iterator[Metric]:
        calls = CounterMetricFamily(
            "taoflow_judge_calls", "LLM judge requests by outcome (ok, retried, failed).", labels=["outcome"]
        )
        for outcome in sorted({"ok", "retried", "failed", *self.calls}):
            calls.add_metric([outcome], self.calls.get(outcome, 0))
        unscored = CounterMetricFamily(
            "taoflow_judge_unscored_candidates",
            "Candidates a judge left unscored, by reason (malformed, refusal, missing, timeout, http_5xx, ...).",
            labels=["reason"],
        )
        for reason in sorted({*UNSCORED_REASONS, *self.unscored}):  # from zero: a reason's first failure is a rise
            unscored.add_metric([reason], self.unscored.get(reason, 0))
        tokens = CounterMetricFamily("taoflow_judge_tokens", "Tokens the judges read and wrote.", labels=["kind"])
        for kind, count in self.tokens.items():
            tokens.add_metric([kind], count)
        yield calls
        yield unscored
        yield tokens
        yield CounterMetricFamily(
            "taoflow_judge_cached_verdicts", "Judge verdicts served from the cache.", value=self.cached
        )

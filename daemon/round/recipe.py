"""One TAO round, read top to bottom: prepare → generate → score → train → register → gate.

Each step reads what the step before it left in the round's work directory and
records its completion (see `rounds.py`); `TaoRound.run` resumes an unfinished round
at its next step, so an interrupted round is neither forgotten nor redone.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError, NothingToLearn, NothingToTrain, RoundError, UnknownVersion
from taoflow.connectors.generation.base_model import ResolvedModel
from taoflow.connectors.generation.placement import (
    Placement,
    check_free_memory,
    release_accelerator,
    resolve_placement,
    visible_gpus,
    weights_bytes,
)
from taoflow.connectors.protocols import Generator, Progress, SamplingConfig
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.training.launch import train_adapter_distributed
from taoflow.connectors.training.lora import train_adapter
from taoflow.daemon.round import candidates as cand
from taoflow.daemon.round.cluster import ClusterRound, RoundInputs
from taoflow.daemon.round.evaluation import Evaluation, evaluate, load_golden, rescore, slices
from taoflow.daemon.round.parts import TaskScorers, gate_policy, resolve_model, training_config
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.buffer import StoredPrompt
from taoflow.daemon.store.erasure import erased_request_ids
from taoflow.daemon.store.rounds import RoundRecord, RoundStore
from taoflow.daemon.store.state import State
from taoflow.policies.gate import SliceScores, decide_gate

__all__ = ["ProgressFactory", "TaoRound", "no_progress"]

log = logging.getLogger(__name__)

#: Training holds the base weights plus the LoRA weights, their gradients and optimiser state, and activations:
#: the weights times this is the least it can need (a floor: a check that passes can still run out later).
_TRAINING_HEADROOM = 1.2

#: (description, total units) -> a callback that advances a progress display.
ProgressFactory = Callable[[str, int], Progress]


def no_progress(description: str, total: int) -> Progress:
    return lambda done: None


class TaoRound:
    """Runs (or resumes) the round of one served model."""

    def __init__(
        self,
        settings: Settings,
        state: State,
        *,
        scorers: TaskScorers,
        generator_factory: Callable[[Path], Generator],
        gate_scorers: TaskScorers | None = None,
        progress: ProgressFactory = no_progress,
        auto_promote: bool = True,
        tasks: Sequence[str] = (),
        max_prompts: int | None = None,
        cluster: ClusterRound | None = None,
    ) -> None:
        """`cluster`: the round's generation, scoring, training and gate evaluation run as a job on a Ray cluster
        (`round.runner: ray`); None runs them in this process."""
        self.settings = settings
        self.cluster = cluster
        self.tasks = tuple(tasks)  # empty: every task
        self.max_prompts = max_prompts
        self.state = state
        self.scorers = scorers
        self.gate_scorers = gate_scorers  # None: the gate judges with the training scorers
        self.rounds = RoundStore(state.db, state.rounds_dir)
        self.model_name = settings.model.served_name
        self.progress = progress
        self.auto_promote = auto_promote
        self._generator_factory = generator_factory
        self._generator: Generator | None = None

    # ------------------------------------------------------------------ recipe
    def run(self) -> RoundRecord:
        record = self.rounds.unfinished(self.model_name)
        if record is None:
            self._check_new_prompts()  # a round with nothing to train is never recorded (and costs no cooldown)
            record = self.rounds.start(self.model_name)
        if record.step != "pending":
            log.info("resuming round %d after step %s", record.id, record.step)
        steps: dict[str, Callable[[RoundRecord], tuple[dict[str, Any], str | None]]] = {
            "prepare": self.prepare,
            "generate": self.generate,
            "score": self.score,
            "train": self.train,
            "register": self.register,
            "gate": self.gate,
            "done": lambda r: ({}, None),
        }
        while record.status == "running":
            step = record.next_step()
            started = time.perf_counter()
            try:
                summary, version = steps[step](record)
            except NothingToLearn as exc:
                log.warning("round %d skipped: %s", record.id, exc)
                return self._skip(record, step, str(exc), started)
            except Exception as exc:
                reason = f"{step} failed: {type(exc).__name__}: {exc}"
                log.error("round %d %s", record.id, reason)
                self.rounds.fail(record.id, reason)
                raise
            summary["seconds"] = round(time.perf_counter() - started, 2)
            verdict = _verdict(summary) if step == "gate" else None
            record = self.rounds.complete_step(record.id, step, summary, version=version, reason=verdict)
        return record

    def prepare(self, record: RoundRecord) -> tuple[dict[str, Any], str | None]:
        limit = self.settings.generate.max_prompts
        if self.max_prompts is not None:
            limit = min(limit, self.max_prompts)
        prompts = self.state.buffer.training_prompts(limit, tasks=self.tasks or None)
        if not prompts:
            raise RoundError("the buffer holds no new training prompts; ingest some first")
        champion = self.state.registry.alias(self.model_name, "champion")
        _write_json(record.work_dir / "prompts.json", {"ids": [p.id for p in prompts], "champion": champion})
        tasks: dict[str, int] = {}
        for p in prompts:
            tasks[p.record.task] = tasks.get(p.record.task, 0) + 1
        return {"prompts": len(prompts), "tasks": tasks, "champion": champion}, None

    def generate(self, record: RoundRecord) -> tuple[dict[str, Any], str | None]:
        if self.cluster is not None:
            return self._on_cluster(record, self.cluster), None
        stored, champion = self._stored(record)
        prompts = [p.record for p in stored]
        g = self.settings.generate
        sampling = SamplingConfig(
            n=g.n, temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens, seed=g.seed + record.id
        )
        # Prompts earlier rounds found nothing to learn in get more candidates (generate.retry_n).
        again = replace(sampling, n=g.retry_n or min(2 * g.n, 256))
        retried = [i for i, p in enumerate(stored) if p.attempts]
        fresh = [i for i, p in enumerate(stored) if not p.attempts]
        progress = self.progress("generate", len(prompts))
        outputs: list[Any] = [None] * len(prompts)
        started = time.perf_counter()
        for indices, config in ((fresh, sampling), (retried, again)):
            if not indices:
                continue
            rows = self.generator().generate(
                [prompts[i].messages for i in indices], config, adapter=self._adapter_path(champion), progress=progress
            )
            for i, row in zip(indices, rows, strict=True):
                outputs[i] = row
        seconds = time.perf_counter() - started
        placement = "fleet" if self.settings.generate.backend == "fleet" else self.placement.device
        cand.write_candidates(record.work_dir / "candidates.jsonl", prompts, outputs)
        tokens = sum(c.num_tokens for row in outputs for c in row)
        return {
            "candidates": sum(len(row) for row in outputs),
            "tokens": tokens,
            "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0,
            "backend": self.settings.generate.backend,
            "device": placement,
            "sampling": asdict(sampling),
            "retried": {"prompts": len(retried), "n": again.n},
        }, None

    def score(self, record: RoundRecord) -> tuple[dict[str, Any], str | None]:
        if self.cluster is not None:
            return dict(_stages(record)["score"]), None
        prompts, champion = self._prompts(record)
        self.scorers.use_policy(self.base.path, self._adapter_path(champion))
        rows = cand.read_candidates(record.work_dir / "candidates.jsonl")
        scored = cand.score_all(prompts, rows, self.scorers, progress=self.progress("score", len(prompts)))
        cand.write_scored(record.work_dir / "scored.jsonl", scored)
        stats = cand.score_statistics(scored, self.selection)
        summary: dict[str, Any] = {"tasks": stats, "examples": len(self._examples(scored))}
        if judges := self.scorers.judges():
            summary["judges"] = judges
        if normalisation := self.scorers.normalisation():
            summary["normalisation"] = normalisation
        return summary, None

    def train(self, record: RoundRecord) -> tuple[dict[str, Any], str | None]:
        if self.cluster is not None:
            stages = _stages(record)
            if stages.get("nothing_to_learn"):
                gone = json.loads((record.work_dir / "erased-before-training.json").read_text())
                raise NothingToLearn(
                    self._nothing_to_learn(cand.read_scored(record.work_dir / "scored.jsonl"), erased=len(gone))
                )
            return {**stages["train"], "runner": "ray"}, None
        scored = cand.read_scored(record.work_dir / "scored.jsonl")
        # Prompts erased since the round took them are not trained on (those erased from here on are recorded
        # against this round when it registers its adapter).
        gone = erased_request_ids(self.state.db, [prompt.request_id for prompt, _ in scored])
        if gone:
            log.info("round %d: %d of its prompts were erased since it took them; not trained on", record.id, len(gone))
            scored = [(prompt, candidates) for prompt, candidates in scored if prompt.request_id not in gone]
        _write_json(record.work_dir / "erased-before-training.json", sorted(gone))
        examples = self._examples(scored)
        if not examples:
            raise NothingToLearn(self._nothing_to_learn(scored, erased=len(gone)))
        _, champion = self._prompts(record)
        replayed = self._replay(champion, seed=record.id)
        warm = champion if self.settings.train.init == "champion" else None
        config = replace(training_config(self.settings, self.placement), init_adapter=self._adapter_path(warm))
        self._free_generator()
        processes = self._training_processes()
        check_free_memory(
            self.placement,
            int(weights_bytes(self.base.path, self.placement.dtype) * _TRAINING_HEADROOM),
            what=f"training {self.base.reference} in {self.placement.dtype}",
        )
        trained = [*examples, *replayed]
        progress = self.progress("train", cand.planned_steps(len(trained), config, processes=processes))
        if processes > 1:
            result = train_adapter_distributed(
                self.base.path,
                trained,
                config,
                work_dir=record.work_dir / "train",
                processes=processes,
                fsdp=self.settings.train.fsdp,
                progress=progress,
            )
        else:
            result = train_adapter(
                self.base.path,
                trained,
                config,
                work_dir=record.work_dir / "train",
                progress=progress,
                reward=self._reward if config.objective == "grpo" else None,
            )
        return {
            "device": self.placement.device,
            "dtype": self.placement.dtype,
            "processes": processes,
            "examples": len(examples),
            "replayed": len(replayed),
            "steps": result.steps,
            "final_loss": result.final_loss,
            "samples_per_second": round(result.samples_per_second, 2),
            "tokens": result.tokens,
            "train_seconds": round(result.seconds, 2),
            "resumed_from": result.resumed_from,
            "init": warm or "base",
        }, None

    def register(self, record: RoundRecord) -> tuple[dict[str, Any], str | None]:
        # Idempotent: a round interrupted after storing or registering resumes here without duplicates.
        adapter_dir = record.work_dir / "train" / "adapter"
        prompts, champion = self._prompts(record)
        base = self._base_of(record)
        started = time.strftime("%Y%m%d%H%M%S", time.gmtime(record.started_at))
        version = f"{self.model_name}-r{record.id:04d}-{started}"
        store, registry = self.state.store, self.state.registry
        if not store.exists(version):
            manifest = cand.manifest(
                version=version,
                base=base,
                parent=champion,
                prompts=prompts,
                settings=self.settings,
                summary=record.summary,
            )
            _write_json(adapter_dir / "taoflow-manifest.json", manifest)
            store.put(version, adapter_dir)
        uri = store.uri(version)
        if version not in {v.version for v in registry.versions(model=self.model_name)}:
            manifest = json.loads((store.fetch(version) / "taoflow-manifest.json").read_text())
            registry.register(
                version=version,
                model=self.model_name,
                parent=champion,
                base_model=base.reference,
                base_digest=base.digest,
                uri=uri,
                manifest=manifest,
            )
        skipped = record.work_dir / "erased-before-training.json"
        again = self.state.buffer.mark_consumed(
            _ids(record),
            record.id,
            not_trained=json.loads(skipped.read_text()) if skipped.exists() else (),
            unsolved=self._unsolved(record),
            retries=self.settings.generate.retry_unsolved,
        )
        return {"version": version, "uri": uri, "retry": len(again)}, version

    def gate(self, record: RoundRecord) -> tuple[dict[str, Any], str | None]:
        version = record.version
        if version is None:
            raise RoundError(f"round {record.id} reached the gate without a registered adapter")
        heldout = [p.record for p in self.state.buffer.heldout()]
        champion = self.state.registry.alias(self.model_name, "champion")
        g = self.settings.gate
        judge = self.gate_scorers or self.scorers
        # Model scorers judge both sides with the champion as policy; the training scorers with the statistics of
        # the score step (the gate's own scorers have none: both sides go through the same plain mapping).
        if self.cluster is not None:  # the job evaluated both sides against the champion the round started from
            _, champion = self._prompts(record)
            evaluations = _evaluations(record)
            baseline, candidate = evaluations["champion"], evaluations["candidate"]
            golden_slices = (
                slices(evaluations["golden candidate"], evaluations["golden champion"])
                if "golden candidate" in evaluations
                else []
            )
        else:
            for scorers in {id(judge): judge, id(self.scorers): self.scorers}.values():
                scorers.use_policy(self.base.path, self._adapter_path(champion))
            self.scorers.restore(record.summary.get("score", {}).get("normalisation", {}))
            baseline = self._evaluate(heldout, champion, "eval champion" if champion else "eval base", judge)
            candidate = self._evaluate(heldout, version, "eval candidate", judge)
            golden_slices = []
            if g.golden_file is not None:
                golden = load_golden(g.golden_file)
                golden_slices = slices(
                    self._evaluate(golden, version, "golden candidate", judge),
                    self._evaluate(golden, champion, "golden champion", judge),
                )
        decision = decide_gate(slices(candidate, baseline), gate_policy(self.settings), golden=golden_slices)
        registry = self.state.registry
        if registry.get(version).state == "candidate":  # not yet judged (a resumed gate may find it judged)
            registry.transition(version, "gated" if decision.passed else "rejected", reason=decision.reason)
        promoted = decision.passed and self.auto_promote
        if promoted and registry.get(version).state == "gated":
            registry.promote(version, reason=f"gate passed: {decision.reason}")
        summary = {
            "passed": decision.passed,
            "outcome": decision.outcome,
            "reason": decision.reason,
            "promoted": promoted,
            "against": champion or "base",
            "slices": [_slice_summary(s) for s in decision.slices],
            "golden": [_slice_summary(s) for s in decision.golden],
            "noise": asdict(decision.noise) if decision.noise else None,
            "unscored": {"baseline": baseline.unscored, "candidate": candidate.unscored},
        }
        if self.gate_scorers is not None:  # what the training scorers say of the same answers, beside the gate's
            if self.cluster is not None:
                again = (evaluations["candidate training scorers"], evaluations["champion training scorers"])
            else:
                again = (rescore(candidate, heldout, self.scorers), rescore(baseline, heldout, self.scorers))
            summary["training_scorers"] = [_slice_summary(s) for s in slices(*again)]
        return summary, None

    def _on_cluster(self, record: RoundRecord, cluster: ClusterRound) -> dict[str, Any]:
        """The round's job on the cluster, from its inputs to its outputs in the work directory, where the steps
        after it read them as they read their own. Prompts erased before the job starts are not sent."""
        stored, champion = self._stored(record)
        gone = erased_request_ids(self.state.db, [p.record.request_id for p in stored])
        _write_json(record.work_dir / "erased-before-training.json", sorted(gone))
        sent = [p for p in stored if p.record.request_id not in gone]
        if not sent:
            raise NothingToLearn(f"all {len(stored)} prompts of the round were erased before it started")
        g = self.settings.generate
        again = g.retry_n or min(2 * g.n, 256)
        inputs = RoundInputs(
            prompts=[p.record for p in sent],
            candidates=[again if p.attempts else g.n for p in sent],
            heldout=[p.record for p in self.state.buffer.heldout()],
            golden=load_golden(self.settings.gate.golden_file) if self.settings.gate.golden_file else [],
            replay=self._replay(champion, seed=record.id),
            training=training_config(self.settings),
            champion=champion,
            champion_dir=self._adapter_path(champion),
        )
        stages = cluster.run(record, inputs)
        home = record.work_dir / "ray"
        for name in ("candidates.jsonl", "scored.jsonl"):
            (home / name).replace(record.work_dir / name)
        if (home / "adapter").is_dir():
            (record.work_dir / "train").mkdir(parents=True, exist_ok=True)
            (home / "adapter").replace(record.work_dir / "train" / "adapter")
        retried = sum(1 for p in sent if p.attempts)
        return {
            **stages["generate"],
            "backend": g.backend,
            "runner": "ray",
            "job": stages["job"],
            "retried": {"prompts": retried, "n": again},
        }

    # ------------------------------------------------------------------ helpers
    @cached_property
    def base(self) -> ResolvedModel:
        """The base model, converted and cached on first use (a round with nothing to train never loads it)."""
        return resolve_model(self.settings)

    def _base_of(self, record: RoundRecord) -> ResolvedModel:
        """The base model the round's adapter was trained on: on a cluster, the one its training workers resolved
        (this side never loads it)."""
        if self.cluster is None:
            return self.base
        base = _stages(record)["train"]["base"]
        return ResolvedModel(base["reference"], Path(base["path"]), base["digest"])

    def _check_new_prompts(self) -> None:
        counts = {task: c.new for task, c in self.state.buffer.stats().tasks.items()}
        wanted = self.tasks or tuple(counts)
        if not any(counts.get(task, 0) for task in wanted):
            held = ", ".join(f"{task}: {n}" for task, n in counts.items()) or "none"
            raise NothingToTrain(
                f"the buffer holds no new training prompts for {', '.join(wanted) or 'any task'} "
                f"(new prompts per task: {held}); ingest some first"
            )

    @cached_property
    def selection(self) -> cand.Selection:
        return cand.selection_of(self.settings)

    def _examples(self, scored: list[cand.ScoredPrompt]) -> list[Any]:
        return list(cand.training_examples(scored, self.selection))

    def _replay(self, champion: str | None, *, seed: int) -> list[Any]:
        """Up to train.replay examples of the rounds behind the champion (its round's, then its parent's, ...),
        selected from their scored candidates as this round selects, erased prompts left out; a seeded sample
        when there are more."""
        limit = self.settings.train.replay
        found: list[Any] = []
        seen: set[str] = set()
        version = champion
        while version is not None and version not in seen and len(found) < limit:
            seen.add(version)
            for (work_dir,) in self.state.db.query("SELECT work_dir FROM rounds WHERE version = ?", (version,)):
                path = Path(work_dir) / "scored.jsonl"
                if path.is_file():
                    scored = cand.read_scored(path)
                    gone = erased_request_ids(self.state.db, [prompt.request_id for prompt, _ in scored])
                    found += self._examples([(p, c) for p, c in scored if p.request_id not in gone])
            try:
                version = self.state.registry.get(version).parent
            except UnknownVersion:
                break
        if len(found) > limit:
            found = random.Random(seed).sample(found, limit)
        return found

    def _reward(self, records: Sequence[PromptRecord], answers: Sequence[str]) -> list[float | None]:
        """GRPO's reward: the task's scorers, each prompt's answers of one batch scored together."""
        groups: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            groups.setdefault(record.request_id, []).append(index)
        values: list[float | None] = [None] * len(answers)
        for indices in groups.values():
            record = records[indices[0]]
            scored = self.scorers.for_task(record.task).score(record, [answers[i] for i in indices])
            for i, value in zip(indices, scored, strict=True):
                values[i] = value
        return values

    def _nothing_to_learn(self, scored: list[cand.ScoredPrompt], *, erased: int) -> str:
        """Why no example came out of the round, with the figures an operator needs to change that."""
        s = self.selection
        rule = (
            f"beat their group's mean by {s.relative_margin:g} (floor {s.floor:g})"
            if s.mode == "relative"
            else f"scored at least score_threshold {s.threshold:g}"
        )
        if s.objective == "dpo":
            rule += f" and beat the worst by dpo_margin {s.dpo_margin:g}"
        if s.objective == "grpo":
            rule = f"scored differently from another by relative_margin {s.relative_margin:g} (GRPO)"
        tasks = cand.score_statistics(scored, s)
        figures = "; ".join(
            f"{task}: {t['prompts']} prompts, best scores median {t['best_median']} max {t['best_max']}, "
            f"{t['unscored']}/{t['candidates']} candidates unscored"
            for task, t in tasks.items()
        )
        return (
            f"no candidate of {len(scored)} prompts {rule}: nothing to learn"
            + (f" ({erased} prompts erased meanwhile)" if erased else "")
            + (f"; {figures}" if figures else "")
        )

    def _skip(self, record: RoundRecord, step: str, reason: str, started: float) -> RoundRecord:
        """A skipped round trains on none of its prompts: each is left for a later round while it has tries left
        (generate.retry_unsolved), else consumed."""
        prompts, _ = self._prompts(record)
        again = self.state.buffer.mark_consumed(
            _ids(record),
            record.id,
            not_trained=[p.request_id for p in prompts],
            unsolved=_ids(record),
            retries=self.settings.generate.retry_unsolved,
        )
        summary = {"skipped": reason, "seconds": round(time.perf_counter() - started, 2), "retry": len(again)}
        return self.rounds.skip(record.id, step, reason, summary)

    def generator(self) -> Generator:
        """One generator per round process (one model load, one engine), shared by generation and the gate."""
        if self._generator is None:
            self._generator = self._generator_factory(self.base.path)
        return self._generator

    @cached_property
    def placement(self) -> Placement:
        """Where this round's model runs (`model.device`, `model.dtype`), resolved once."""
        return resolve_placement(self.settings.model.device, self.settings.model.dtype)

    def _free_generator(self) -> None:
        """Training needs the accelerator's memory: a GPU model or a vLLM engine is dropped before it (the gate
        loads it again). On the CPU a transformers model stays, so the gate reuses it."""
        if self._generator is None:
            return
        if self.placement.on_accelerator or self.settings.generate.backend == "vllm":
            log.info("freeing the generation model before training")
            self._generator.close()
            self._generator = None
            release_accelerator()

    def _training_processes(self) -> int:
        """train.num_processes, or one per visible GPU when the round may use them all (device auto or cuda)."""
        wanted = self.settings.train.num_processes
        gpus = visible_gpus() if self.placement.on_accelerator else 0
        if wanted == 0:
            return gpus if gpus > 1 and self.settings.model.device in ("auto", "cuda") else 1
        if gpus and wanted > gpus:
            raise ConfigurationError(
                f"train.num_processes is {wanted} but this machine shows {gpus} GPU(s): one process per GPU; "
                "set train.num_processes to at most that (0: one per GPU)"
            )
        return wanted

    def _evaluate(self, records: list[PromptRecord], version: str | None, label: str, scorers: TaskScorers) -> Any:
        return evaluate(
            self.generator(),
            records,
            scorers,
            adapter=self._adapter_path(version),
            max_new_tokens=self.settings.gate.max_new_tokens,
            progress=self.progress(label, len(records)),
        )

    def _adapter_path(self, version: str | None) -> Path | None:
        return self.state.store.fetch(version) if version else None

    def _prompts(self, record: RoundRecord) -> tuple[list[PromptRecord], str | None]:
        stored, champion = self._stored(record)
        return [p.record for p in stored], champion

    def _stored(self, record: RoundRecord) -> tuple[list[StoredPrompt], str | None]:
        data = json.loads((record.work_dir / "prompts.json").read_text())
        return self.state.buffer.get(data["ids"]), data["champion"]

    def _unsolved(self, record: RoundRecord) -> list[int]:
        """The round's prompts in which no candidate passed the selection (nothing to learn from them)."""
        stored, _ = self._stored(record)
        ids = {p.record.request_id: p.id for p in stored}
        scored = cand.read_scored(record.work_dir / "scored.jsonl")
        return [
            ids[p.request_id] for p, cands in scored if p.request_id in ids and not self.selection.learns_from(cands)
        ]


def _verdict(gate: dict[str, Any]) -> str:
    """The round's reason once the gate has judged it: what the gate decided and why."""
    verdict = "gate passed" if gate["passed"] else "gate rejected the adapter"
    return f"{verdict}: {gate['reason']}" + ("; promoted to champion" if gate["promoted"] else "")


def _slice_summary(s: SliceScores) -> dict[str, Any]:
    """A slice as the round records it: its means and how many prompts changed (not every prompt's delta)."""
    return {
        "task": s.task,
        "n": s.n,
        "candidate_mean": s.candidate_mean,
        "champion_mean": s.champion_mean,
        "changed": s.changed,
    }


def _stages(record: RoundRecord) -> dict[str, Any]:
    """What the round's job on the cluster reported of its stages."""
    data: dict[str, Any] = json.loads((record.work_dir / "ray" / "stages.json").read_text())
    return data


def _evaluations(record: RoundRecord) -> dict[str, Evaluation]:
    data = json.loads((record.work_dir / "ray" / "evaluations.json").read_text())
    return {
        label: Evaluation(scores=e["scores"], answers=e["answers"], unscored=int(e["unscored"]))
        for label, e in data.items()
    }


def _ids(record: RoundRecord) -> list[int]:
    return list(json.loads((record.work_dir / "prompts.json").read_text())["ids"])


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    tmp.replace(path)

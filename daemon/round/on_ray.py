"""A round's stages as a Ray job: `python -m taoflow.daemon.round.on_ray --exchange URI`.

What runs on the cluster (submitted by `cluster.py`; the daemon never imports this module). It reads the round's
inputs from the exchange and writes each stage's outputs back beside a `<stage>.json` summary, so a job started
again for the same round (after it was stopped, or its driver lost) goes on from the first stage without one:

    generate  Ray Data map_batches over actors holding taoflow's generator, the champion's adapter loaded
    score     Ray Data map_batches over CPU actors holding the task's scorers (verifiers in their sandbox, judges)
    train     a Ray Train TorchTrainer whose workers run taoflow's TRL/PEFT step; checkpoints on the exchange
    evaluate  the gate's greedy evaluation of the champion and the new adapter, as one task

The daemon's side decides the gate, registers the adapter and records the round, as for a local round.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from taoflow.connectors.cluster import ray_stages
from taoflow.connectors.cluster.exchange import Exchange
from taoflow.connectors.errors import RoundError, TaoflowError
from taoflow.connectors.generation.placement import resolve_placement
from taoflow.connectors.protocols import Completion, SamplingConfig
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.training.launch import read_job, write_job
from taoflow.connectors.training.lora import TrainingConfig, train_adapter
from taoflow.daemon.round import candidates as cand
from taoflow.daemon.round.evaluation import Evaluation, evaluate, rescore
from taoflow.daemon.round.parts import (
    build_gate_scorers,
    build_local_generator,
    build_scorers,
    resolve_model,
    training_config,
)
from taoflow.daemon.settings import Settings

__all__ = ["main"]

log = logging.getLogger("taoflow.round.on_ray")

#: The job's exit status when a stage failed for a reason the round records (its last line says which).
FAILED = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="taoflow-round-on-ray")
    parser.add_argument("--exchange", required=True, help="the round's folder on the exchange")
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--region", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    exchange = Exchange(args.exchange, endpoint_url=args.endpoint_url, region=args.region)
    ray_stages.connect()
    try:
        run(exchange)
    except TaoflowError as exc:
        log.error("round failed on the cluster: %s", exc)
        exchange.write_json("outputs/failed.json", {"reason": str(exc)})
        return FAILED
    return 0


def run(exchange: Exchange) -> None:
    spec = exchange.read_json("inputs/spec.json")
    settings = _settings(spec["sections"])
    where = _Where(exchange.uri, exchange.endpoint_url, exchange.region)
    stages: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("generate", lambda: _generate(exchange, where, spec, settings)),
        ("score", lambda: _score(exchange, spec, settings)),
        ("train", lambda: _train(exchange, where, spec, settings)),
        ("evaluate", lambda: _evaluate(exchange, where, spec, settings)),
    ]
    for name, stage in stages:
        if exchange.exists(f"outputs/{name}.json"):
            log.info("stage %s: done by an earlier attempt", name)
            continue
        if exchange.exists("outputs/nothing-to-learn.json"):
            return
        log.info("stage %s: starting", name)
        started = time.perf_counter()
        summary = stage()
        summary["seconds"] = round(time.perf_counter() - started, 2)
        exchange.write_json(f"outputs/{name}.json", summary)
        log.info("stage %s: done in %.1f s", name, summary["seconds"])


# ---------------------------------------------------------------------- stages (on the driver)
def _generate(exchange: Exchange, where: _Where, spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    r = settings.ray
    bundle = {"CPU": r.generation_cpus, "GPU": r.generation_gpus}
    ray_stages.place([bundle] * r.generation_actors, timeout_s=r.placement_timeout_seconds, what="generation")
    started = time.perf_counter()
    factory = functools.partial(_Generation, where, spec["sections"], bool(spec["champion"]))
    exchange.remove("outputs/candidates")
    ray_stages.map_rows(
        exchange,
        "inputs/prompts.parquet",
        "outputs/candidates",
        factory,
        actors=r.generation_actors,
        batch_size=r.generation_batch,
        num_cpus=r.generation_cpus,
        num_gpus=r.generation_gpus,
    )
    seconds = time.perf_counter() - started
    count = tokens = 0
    for row in exchange.read_rows("outputs/candidates"):
        completions = json.loads(row["candidates"])
        count += len(completions)
        tokens += sum(int(c["num_tokens"]) for c in completions)
    return {"candidates": count, "tokens": tokens, "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0}


def _score(exchange: Exchange, spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    r = settings.ray
    ray_stages.place([{"CPU": 1.0}] * r.score_actors, timeout_s=r.placement_timeout_seconds, what="scoring")
    exchange.remove("outputs/scored")
    ray_stages.map_rows(
        exchange,
        "outputs/candidates",
        "outputs/scored",
        functools.partial(_Scoring, spec["sections"]),
        actors=r.score_actors,
        batch_size=r.score_batch,
        num_cpus=1.0,
        num_gpus=0.0,
    )
    scored = _read_scored(exchange)
    selection = cand.selection_of(settings)
    return {
        "tasks": cand.score_statistics(scored, selection),
        "examples": len(cand.training_examples(scored, selection)),
    }


def _train(exchange: Exchange, where: _Where, spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    scored = _read_scored(exchange)
    examples = cand.training_examples(scored, cand.selection_of(settings))
    if not examples:
        exchange.write_json("outputs/nothing-to-learn.json", {"prompts": len(scored)})
        return {"examples": 0}
    replayed: list[Any] = []
    if exchange.exists("inputs/replay.json"):
        with tempfile.TemporaryDirectory() as tmp:
            job = Path(tmp) / "replay.json"
            job.write_bytes(exchange.read_bytes("inputs/replay.json"))
            _, replayed, _ = read_job(job)
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "train-job.json"
        write_job(job, Path("."), [*examples, *replayed], training_config(settings))
        exchange.write_bytes("outputs/train-job.json", job.read_bytes())
    r = settings.ray
    bundle = {"CPU": r.train_cpus, "GPU": r.train_gpus}
    ray_stages.place([bundle] * r.train_workers, timeout_s=r.placement_timeout_seconds, what="training")
    result = ray_stages.train_on_workers(
        _train_loop,
        {"where": asdict(where), "sections": spec["sections"], "champion": bool(spec["champion"])},
        exchange=exchange,
        name=f"round-{spec['round']}",
        workers=r.train_workers,
        cpus=r.train_cpus,
        gpus=r.train_gpus,
        max_failures=r.max_failures,
    )
    if result.error is not None:
        raise RoundError(f"training failed on the cluster: {result.error}")
    trained = exchange.read_json("outputs/train-result.json")
    return {**trained, "examples": len(examples), "replayed": len(replayed), "workers": r.train_workers}


def _evaluate(exchange: Exchange, where: _Where, spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    r = settings.ray
    bundle = {"CPU": r.generation_cpus, "GPU": r.generation_gpus}
    ray_stages.place([bundle], timeout_s=r.placement_timeout_seconds, what="the gate's evaluation")
    evaluations = ray_stages.run_task(
        _evaluate_both,
        where,
        spec["sections"],
        bool(spec["champion"]),
        num_cpus=r.generation_cpus,
        num_gpus=r.generation_gpus,
    )
    exchange.write_json("outputs/evaluations.json", evaluations)
    return {"prompts": len(evaluations["candidate"]["answers"])}


# ---------------------------------------------------------------------- what actors, workers and tasks run
@dataclass(frozen=True)
class _Where:
    """The exchange folder as plain values (what travels to actors and workers)."""

    uri: str
    endpoint_url: str | None
    region: str | None

    def open(self) -> Exchange:
        return Exchange(self.uri, endpoint_url=self.endpoint_url, region=self.region)


class _Generation:
    """A generation actor: the model loaded once (and the champion's adapter), candidates for batch after batch.
    Each batch is sampled with the seed of its first prompt, so the candidates do not depend on which actor
    took the batch."""

    def __init__(self, where: _Where, sections: dict[str, Any], champion: bool) -> None:
        self.settings = _settings(sections)
        self.generator = build_local_generator(self.settings, resolve_model(self.settings).path)
        self.adapter = _champion_dir(where.open()) if champion else None
        print("taoflow: generation actor ready", flush=True)  # Ray forwards an actor's stdout to the job's log

    def __call__(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        g = self.settings.generate
        records = [PromptRecord.from_json(text) for text in columns["record"]]
        out: list[str] = [""] * len(records)
        for n in sorted(set(columns["n"])):
            rows = [i for i, value in enumerate(columns["n"]) if value == n]
            sampling = SamplingConfig(
                n=int(n),
                temperature=g.temperature,
                top_p=g.top_p,
                max_new_tokens=g.max_new_tokens,
                seed=int(columns["seed"][rows[0]]),
            )
            outputs = self.generator.generate([records[i].messages for i in rows], sampling, adapter=self.adapter)
            for i, row in zip(rows, outputs, strict=True):
                out[i] = json.dumps([asdict(c) for c in row])
        return {"request_id": columns["request_id"], "record": columns["record"], "candidates": out}


class _Scoring:
    """A scoring actor: the task's scorers (verifiers in their sandbox process), scored rows in the form
    `scored.jsonl` keeps them."""

    def __init__(self, sections: dict[str, Any]) -> None:
        self.scorers = build_scorers(_settings(sections))

    def __call__(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        records = [PromptRecord.from_json(text) for text in columns["record"]]
        candidates = {
            r.request_id: [Completion(**c) for c in json.loads(text)]
            for r, text in zip(records, columns["candidates"], strict=True)
        }
        scored = cand.score_all(records, candidates, self.scorers)
        lines = [
            json.dumps({"record": json.loads(r.to_json()), "candidates": [asdict(c) for c in cs]}) for r, cs in scored
        ]
        return {"request_id": columns["request_id"], "scored": lines}


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: taoflow's TRL/PEFT step on the round's examples (data parallel over the workers);
    the first worker puts the adapter and the result on the exchange."""
    exchange = _Where(**config["where"]).open()
    settings = _settings(config["sections"])
    base = resolve_model(settings)
    rank = ray_stages.world_rank()
    with tempfile.TemporaryDirectory(prefix="taoflow-train-") as tmp:
        work = Path(tmp)
        (work / "checkpoints").mkdir()
        ray_stages.restore_checkpoint(work / "checkpoints")
        job = work / "train-job.json"
        job.write_bytes(exchange.read_bytes("outputs/train-job.json"))
        _, examples, _ = read_job(job)
        placement = resolve_placement("cuda" if settings.ray.train_gpus else "cpu", settings.model.dtype)
        warm = None
        if config["champion"] and settings.train.init == "champion":
            warm = _champion_dir(exchange, work / "champion")
        training: TrainingConfig = replace(training_config(settings, placement), init_adapter=warm)
        reporter = ray_stages.CheckpointReporter()
        result = train_adapter(base.path, examples, training, work_dir=work, callbacks=[reporter])
        if rank == 0:
            exchange.remove("outputs/adapter")
            exchange.put_dir("outputs/adapter", result.adapter_dir)
            exchange.write_json(
                "outputs/train-result.json",
                {
                    "steps": result.steps,
                    "final_loss": result.final_loss,
                    "samples_per_second": round(result.samples_per_second * max(1, settings.ray.train_workers), 2),
                    "tokens": result.tokens,
                    "train_seconds": round(result.seconds, 2),
                    "resumed_from": result.resumed_from,
                    "init": "champion" if warm else "base",
                    "device": placement.device,
                    "dtype": placement.dtype,
                    "base": {"reference": base.reference, "digest": base.digest, "path": str(base.path)},
                },
            )


def _evaluate_both(where: _Where, sections: dict[str, Any], champion: bool) -> dict[str, Any]:
    """The gate's evaluations, both sides through one generator and one set of scorers: the champion (or the
    base model) and the new adapter on the held-out prompts, and on the golden set when there is one."""
    exchange = where.open()
    settings = _settings(sections)
    base = resolve_model(settings)
    generator = build_local_generator(settings, base.path)
    scorers = build_scorers(settings)
    judge = build_gate_scorers(settings) or scorers
    with tempfile.TemporaryDirectory(prefix="taoflow-gate-") as tmp:
        old = _champion_dir(exchange, Path(tmp) / "champion") if champion else None
        new = exchange.get_dir("outputs/adapter", Path(tmp) / "candidate")
        heldout = [PromptRecord.from_json(row["record"]) for row in exchange.read_rows("inputs/heldout.parquet")]
        tokens = settings.gate.max_new_tokens
        out: dict[str, Any] = {}
        out["champion"] = evaluate(generator, heldout, judge, adapter=old, max_new_tokens=tokens)
        out["candidate"] = evaluate(generator, heldout, judge, adapter=new, max_new_tokens=tokens)
        if judge is not scorers:
            out["champion training scorers"] = rescore(out["champion"], heldout, scorers)
            out["candidate training scorers"] = rescore(out["candidate"], heldout, scorers)
        if exchange.exists("inputs/golden.parquet"):
            golden = [PromptRecord.from_json(row["record"]) for row in exchange.read_rows("inputs/golden.parquet")]
            out["golden champion"] = evaluate(generator, golden, judge, adapter=old, max_new_tokens=tokens)
            out["golden candidate"] = evaluate(generator, golden, judge, adapter=new, max_new_tokens=tokens)
    return {label: _evaluation_json(e) for label, e in out.items()}


# ---------------------------------------------------------------------- helpers
def _settings(sections: dict[str, Any]) -> Settings:
    """The round's settings as the daemon's side sent them (its secrets never travel: the cluster's own
    TAOFLOW_ variables supply those), with a scratch state directory for the judge's cache."""
    scratch = Path(tempfile.gettempdir()) / "taoflow-on-ray"
    return Settings(**sections, storage={"state_dir": str(scratch)})


def _read_scored(exchange: Exchange) -> list[cand.ScoredPrompt]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scored.jsonl"
        path.write_text("\n".join(row["scored"] for row in exchange.read_rows("outputs/scored")) + "\n")
        return cand.read_scored(path)


def _champion_dir(exchange: Exchange, directory: Path | None = None) -> Path:
    target = directory or Path(tempfile.mkdtemp(prefix="taoflow-champion-"))
    return exchange.get_dir("inputs/champion", target)


def _evaluation_json(evaluation: Evaluation) -> dict[str, Any]:
    return {"scores": evaluation.scores, "answers": evaluation.answers, "unscored": evaluation.unscored}


if __name__ == "__main__":
    sys.exit(main())

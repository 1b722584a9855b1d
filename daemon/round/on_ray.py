"""A round's stages as a Ray job: `python -m taoflow.daemon.round.on_ray --exchange URI`.

What runs on the cluster (submitted by `ray_job.py`; the daemon never imports this module). It reads the round's
inputs from the exchange and writes each stage's outputs back beside a `<stage>.json` summary, so a job started
again for the same round (after it was stopped, or its driver lost) goes on from the first stage without one.
Each stage calls the bodies a local round's stages call (`stages.py`), on Ray's machinery
(`connectors/cluster/ray_runtime.py`, imported when the job runs):

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
from types import ModuleType
from typing import Any

from taoflow.connectors.cluster.exchange import Exchange
from taoflow.connectors.errors import RoundError, TaoflowError
from taoflow.connectors.generation.placement import resolve_placement
from taoflow.connectors.protocols import Completion
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.training.launch import read_job, write_job
from taoflow.connectors.training.lora import TrainingConfig, train_adapter
from taoflow.daemon.round import stages
from taoflow.daemon.round.parts import (
    build_gate_scorers,
    build_local_generator,
    build_scorers,
    resolve_model,
    training_config,
)
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.round_files import ScoredPrompt, read_scored_line, scored_line
from taoflow.daemon.store.summaries import RetriedSummary

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
    _ray().connect()
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
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("generate", lambda: _generate(exchange, where, spec, settings)),
        ("score", lambda: _score(exchange, spec, settings)),
        ("train", lambda: _train(exchange, where, spec, settings)),
        ("evaluate", lambda: _evaluate(exchange, where, spec, settings)),
    ]
    for name, stage in steps:
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
    bundle = {"CPU": r.generation.cpus, "GPU": r.generation.gpus}
    _ray().place([bundle] * r.generation.actors, timeout_s=r.placement_timeout_seconds, what="generation")
    started = time.perf_counter()
    factory = functools.partial(_Generation, where, spec["sections"], bool(spec["champion"]))
    exchange.remove("outputs/candidates")
    _ray().map_rows(
        exchange,
        "inputs/prompts.parquet",
        "outputs/candidates",
        factory,
        actors=r.generation.actors,
        batch_size=r.generation.batch,
        num_cpus=r.generation.cpus,
        num_gpus=r.generation.gpus,
    )
    seconds = time.perf_counter() - started
    outputs = [
        [Completion(**c) for c in json.loads(row["candidates"])] for row in exchange.read_rows("outputs/candidates")
    ]
    device = "cuda" if r.generation.gpus else "cpu"
    # Each batch is sampled with its first prompt's seed: the round's is the first batch's.
    sampling = stages.sampling_for(settings, seed=int(spec["round"]))
    summary = stages.generation_summary(
        outputs, seconds, settings=settings, retried=RetriedSummary(), device=device, sampling=sampling
    )
    return summary.model_dump(mode="json")


def _score(exchange: Exchange, spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    r = settings.ray
    _ray().place([{"CPU": 1.0}] * r.score.actors, timeout_s=r.placement_timeout_seconds, what="scoring")
    exchange.remove("outputs/scored")
    _ray().map_rows(
        exchange,
        "outputs/candidates",
        "outputs/scored",
        functools.partial(_Scoring, spec["sections"]),
        actors=r.score.actors,
        batch_size=r.score.batch,
        num_cpus=1.0,
        num_gpus=0.0,
    )
    # The scorers ran in the actors: what judges did stays in their logs (model scorers are refused on Ray).
    return stages.score_summary(_read_scored(exchange), settings, None).model_dump(mode="json")


def _train(exchange: Exchange, where: _Where, spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    scored = _read_scored(exchange)
    examples = stages.training_examples(scored, settings)
    if not examples:
        log.info("%s", stages.nothing_to_learn(scored, settings, erased=0))
        exchange.write_json("outputs/nothing-to-learn.json", {"prompts": len(scored)})
        return {"examples": 0}
    replayed: list[Any] = []
    if exchange.exists("inputs/replay.json"):  # the daemon's side chose them (stages.replay_examples)
        with tempfile.TemporaryDirectory() as tmp:
            job = Path(tmp) / "replay.json"
            job.write_bytes(exchange.read_bytes("inputs/replay.json"))
            _, replayed, _ = read_job(job)
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "train-job.json"
        write_job(job, Path("."), [*examples, *replayed], training_config(settings))
        exchange.write_bytes("outputs/train-job.json", job.read_bytes())
    r = settings.ray
    bundle = {"CPU": r.train.cpus, "GPU": r.train.gpus}
    _ray().place([bundle] * r.train.workers, timeout_s=r.placement_timeout_seconds, what="training")
    counts = {"examples": len(examples), "replayed": len(replayed)}
    result = _ray().train_on_workers(
        _train_loop,
        {"where": asdict(where), "sections": spec["sections"], "champion": spec["champion"], **counts},
        exchange=exchange,
        name=f"round-{spec['round']}",
        workers=r.train.workers,
        cpus=r.train.cpus,
        gpus=r.train.gpus,
        max_failures=r.max_failures,
    )
    if result.error is not None:
        raise RoundError(f"training failed on the cluster: {result.error}")
    trained: dict[str, Any] = exchange.read_json("outputs/train-result.json")
    return trained


def _evaluate(exchange: Exchange, where: _Where, spec: dict[str, Any], settings: Settings) -> dict[str, Any]:
    r = settings.ray
    bundle = {"CPU": r.generation.cpus, "GPU": r.generation.gpus}
    _ray().place([bundle], timeout_s=r.placement_timeout_seconds, what="the gate's evaluation")
    evaluations = _ray().run_task(
        _evaluate_both,
        where,
        spec["sections"],
        bool(spec["champion"]),
        num_cpus=r.generation.cpus,
        num_gpus=r.generation.gpus,
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
        records = [PromptRecord.from_json(text) for text in columns["record"]]
        outputs = stages.generate_candidates(
            self.generator,
            records,
            [int(n) for n in columns["n"]],
            settings=self.settings,
            seeds=[int(seed) for seed in columns["seed"]],
            adapter=self.adapter,
        )
        candidates = [json.dumps([asdict(c) for c in row]) for row in outputs]
        return {"request_id": columns["request_id"], "record": columns["record"], "candidates": candidates}


class _Scoring:
    """A scoring actor: the task's scorers (verifiers in their sandbox process), scored rows in the form the
    round's scored file keeps them."""

    def __init__(self, sections: dict[str, Any]) -> None:
        self.scorers = build_scorers(_settings(sections))

    def __call__(self, columns: dict[str, list[Any]]) -> dict[str, list[Any]]:
        records = [PromptRecord.from_json(text) for text in columns["record"]]
        candidates = {
            r.request_id: [Completion(**c) for c in json.loads(text)]
            for r, text in zip(records, columns["candidates"], strict=True)
        }
        scored = stages.score_candidates(records, candidates, self.scorers)
        return {"request_id": columns["request_id"], "scored": [scored_line(r, cs) for r, cs in scored]}


def _train_loop(config: dict[str, Any]) -> None:
    """One Ray Train worker: taoflow's TRL/PEFT step on the round's examples (data parallel over the workers);
    the first worker puts the adapter and the training summary on the exchange."""
    exchange = _Where(**config["where"]).open()
    settings = _settings(config["sections"])
    base = resolve_model(settings)
    rank = _ray().world_rank()
    with tempfile.TemporaryDirectory(prefix="taoflow-train-") as tmp:
        work = Path(tmp)
        (work / "checkpoints").mkdir()
        _ray().restore_checkpoint(work / "checkpoints")
        job = work / "train-job.json"
        job.write_bytes(exchange.read_bytes("outputs/train-job.json"))
        _, examples, _ = read_job(job)
        placement = resolve_placement("cuda" if settings.ray.train.gpus else "cpu", settings.model.dtype)
        warm = None
        if config["champion"] and settings.train.init == "champion":
            warm = _champion_dir(exchange, work / "champion")
        training: TrainingConfig = replace(training_config(settings, placement), init_adapter=warm)
        reporter = _ray().CheckpointReporter()
        result = train_adapter(base.path, examples, training, work_dir=work, callbacks=[reporter])
        if rank == 0:
            exchange.remove("outputs/adapter")
            exchange.put_dir("outputs/adapter", result.adapter_dir)
            summary = stages.train_summary(
                result,
                placement=placement,
                base=base,
                examples=int(config["examples"]),
                replayed=int(config["replayed"]),
                init=config["champion"] if warm else None,
                workers=settings.ray.train.workers,
            )
            exchange.write_json("outputs/train-result.json", summary.model_dump(mode="json"))


def _evaluate_both(where: _Where, sections: dict[str, Any], champion: bool) -> dict[str, Any]:
    """The gate's evaluations (`stages.evaluate_gate`), against the champion the round started from."""
    exchange = where.open()
    settings = _settings(sections)
    base = resolve_model(settings)
    with tempfile.TemporaryDirectory(prefix="taoflow-gate-") as tmp:
        golden = []
        if exchange.exists("inputs/golden.parquet"):
            golden = [PromptRecord.from_json(row["record"]) for row in exchange.read_rows("inputs/golden.parquet")]
        evaluations = stages.evaluate_gate(
            build_local_generator(settings, base.path),
            settings,
            scorers=build_scorers(settings),
            gate_scorers=build_gate_scorers(settings),
            heldout=[PromptRecord.from_json(row["record"]) for row in exchange.read_rows("inputs/heldout.parquet")],
            golden=golden,
            base_dir=base.path,
            champion=_champion_dir(exchange, Path(tmp) / "champion") if champion else None,
            candidate=exchange.get_dir("outputs/adapter", Path(tmp) / "candidate"),
            normalisation={},  # model scorers (the only ones with statistics) are refused on Ray
        )
    return evaluations.to_json()


# ---------------------------------------------------------------------- helpers
def _ray() -> ModuleType:
    """Ray's machinery, imported when the job runs: what actors and workers run (`_Generation`, `_Scoring`) imports
    without Ray, and a process that only imports this module does not start Ray's own state."""
    from taoflow.connectors.cluster import ray_runtime

    return ray_runtime


def _settings(sections: dict[str, Any]) -> Settings:
    """The round's settings as the daemon's side sent them (its secrets never travel: the cluster's own
    TAOFLOW_ variables supply those), with a scratch state directory for the judge's cache."""
    scratch = Path(tempfile.gettempdir()) / "taoflow-on-ray"
    return Settings(**sections, storage={"state_dir": str(scratch)})


def _read_scored(exchange: Exchange) -> list[ScoredPrompt]:
    return [read_scored_line(row["scored"]) for row in exchange.read_rows("outputs/scored")]


def _champion_dir(exchange: Exchange, directory: Path | None = None) -> Path:
    target = directory or Path(tempfile.mkdtemp(prefix="taoflow-champion-"))
    return exchange.get_dir("inputs/champion", target)


if __name__ == "__main__":
    sys.exit(main())

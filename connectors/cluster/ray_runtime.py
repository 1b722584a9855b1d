"""A round's stages on Ray: row stages as Ray Data `map_batches` over actors, training as a Ray Train
`TorchTrainer`, one-off work (the gate's evaluation) as a task; each stage placed within a deadline.

Imported only by the job that runs on the cluster (`taoflow.daemon.round.on_ray`), never by the daemon. What a
stage does is taoflow's own code, handed in as a picklable factory; this module only places and runs it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ray

from taoflow.connectors.cluster.exchange import Exchange
from taoflow.connectors.errors import RoundError

__all__ = [
    "CheckpointReporter",
    "connect",
    "map_rows",
    "place",
    "restore_checkpoint",
    "run_task",
    "train_on_workers",
    "world_rank",
]

log = logging.getLogger(__name__)

#: Columns in, columns out: what a row stage computes for one batch.
Columns = dict[str, list[Any]]


def connect() -> None:
    """Join the cluster the job runs on (the Jobs API sets its address), its workers' output in the job's log."""
    ray.init(log_to_driver=True)


def world_rank() -> int:
    """On a training worker: its rank (0 writes what the workers made together)."""
    return int(ray.train.get_context().get_world_rank())


def place(bundles: Sequence[dict[str, float]], *, timeout_s: float, what: str) -> None:
    """Wait until the cluster can hold `bundles` at once (a placement group, released again), or fail the round:
    Ray itself would wait for ever on a stage it cannot place."""
    wanted = [{k: v for k, v in b.items() if v > 0} or {"CPU": 0.001} for b in bundles]
    group = ray.util.placement_group(wanted, strategy="PACK")
    try:
        ready = group.wait(timeout_seconds=timeout_s)
    finally:
        ray.util.remove_placement_group(group)
    if not ready:
        totals = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}  # type: ignore[no-untyped-call]
        raise RoundError(
            f"the Ray cluster could not place {what} within ray.placement_timeout_seconds ({timeout_s:g} s): it needs "
            f"{_describe(wanted)}, the cluster has {totals or 'nothing'} in all; add nodes or lower ray.* resources"
        )


class _Stage:
    """An actor of a row stage: builds the stage once, then computes batch after batch."""

    def __init__(self, factory: Callable[[], Callable[[Columns], Columns]]) -> None:
        self._compute = factory()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        return pa.table(self._compute(batch.to_pydict()))


def map_rows(
    exchange: Exchange,
    source: str,
    target: str,
    factory: Callable[[], Callable[[Columns], Columns]],
    *,
    actors: int,
    batch_size: int,
    num_cpus: float,
    num_gpus: float,
) -> None:
    """The Parquet rows under `source`, through `actors` actors running the stage `factory` builds, into one
    Parquet file under `target`, in their order. The driver reads and writes the files itself and hands the actors
    one block per batch: no read or write task competes with actors that may hold every CPU of the cluster. An
    actor lost with its node is restarted and its batches retried (Ray Data's defaults): every row comes out
    (tests/e2e/test_ray_round.py kills a node mid-generation)."""
    import pyarrow.parquet as pq
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True  # the same rows in the same order, whatever the actors
    table = exchange.read_table(source)
    blocks = [table.slice(start, batch_size) for start in range(0, table.num_rows, batch_size)] or [table]
    mapped = ray.data.from_arrow(blocks).map_batches(
        _Stage,
        fn_constructor_args=(factory,),
        batch_size=None,  # a block is a batch
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=num_cpus,
        num_gpus=num_gpus or None,
    )
    with exchange.output_stream(f"{target}/part-00000.parquet") as stream:
        writer = None
        batch: Any
        for batch in mapped.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer = writer or pq.ParquetWriter(stream, batch.schema)
            writer.write_table(batch)
        if writer is not None:
            writer.close()


def run_task(fn: Callable[..., Any], *args: Any, num_cpus: float, num_gpus: float) -> Any:
    """`fn(*args)` as one Ray task (retried when its node is lost)."""
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=3)(fn)
    return ray.get(remote.remote(*args))


def train_on_workers(
    loop: Callable[[dict[str, Any]], None],
    config: dict[str, Any],
    *,
    exchange: Exchange,
    name: str,
    workers: int,
    cpus: float,
    gpus: float,
    max_failures: int,
) -> Any:
    """`loop(config)` on `workers` Ray Train workers (torch process group: gloo on CPUs, NCCL on GPUs);
    checkpoints kept under the exchange, so a worker or node lost mid-training resumes from the last one."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=exchange.path("ray-train"),
            storage_filesystem=exchange.fs,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    return trainer.fit()


def restore_checkpoint(directory: Path) -> str | None:
    """On a training worker: the checkpoint Ray Train resumes from (after a lost worker or node), copied into
    `directory` where the trainer looks for its checkpoints; None on a first start."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as path:
        for saved in Path(path).iterdir():
            if saved.is_dir():
                shutil.copytree(saved, directory / saved.name, dirs_exist_ok=True)
                log.info("training resumes from %s", saved.name)
                return saved.name
    return None


def CheckpointReporter() -> Any:
    """A transformers `TrainerCallback` that reports each saved checkpoint to Ray Train (the first worker
    uploads it; every worker reports, as Ray Train needs)."""
    from transformers import TrainerCallback

    class _Reporter(TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            metrics = {"step": int(state.global_step)}
            if ray.train.get_context().get_world_rank() != 0:
                ray.train.report(metrics)
                return
            saved = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copytree(saved, Path(tmp) / saved.name)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
            print(f"taoflow: checkpoint of step {state.global_step} reported", flush=True)

    return _Reporter()


def _describe(bundles: Sequence[dict[str, float]]) -> str:
    counts: dict[str, int] = {}
    for bundle in bundles:
        key = ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.items()))
        counts[key] = counts.get(key, 0) + 1
    return " + ".join(f"{n} x {{{key}}}" for key, n in counts.items())

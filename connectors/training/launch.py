"""Training on several processes: the same `train_adapter` step run by `accelerate launch` (data parallel).

The round hands its examples and configuration to the workers as one JSON job file in the training work
directory; each worker is one process of a torch.distributed group (NCCL on GPUs, gloo on CPUs, which is how the
launch path is tested on machines without GPUs), and the first one writes the adapter and a result file. The
checkpoints are the single-process ones, so a round interrupted here resumes from its last checkpoint with the
same number of processes. Stopping the round stops the launcher, which stops its workers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError, RoundError
from taoflow.connectors.files import write_atomic
from taoflow.connectors.protocols import Progress
from taoflow.connectors.records import PromptRecord
from taoflow.connectors.training.lora import (
    DistillExample,
    Examples,
    PreferenceExample,
    TrainingConfig,
    TrainingResult,
)

__all__ = ["STEP_MARK", "read_job", "train_adapter_distributed", "write_job", "write_result"]

log = logging.getLogger(__name__)

#: A worker prints this line after each optimiser step; the launcher turns it into the round's progress.
STEP_MARK = "taoflow-train-step"

_STOP_S = 30.0


def train_adapter_distributed(
    base_model_dir: Path,
    examples: Examples,
    config: TrainingConfig,
    *,
    work_dir: Path,
    processes: int,
    fsdp: bool = False,
    progress: Progress | None = None,
) -> TrainingResult:
    """Train on `processes` data-parallel workers; the adapter lands in `work_dir / "adapter"` as with one."""
    if config.objective == "grpo":
        raise ConfigurationError(
            "train.objective grpo runs in one process (its reward is the round's scorers, which live in the round "
            "process); set train.num_processes: 1, or use sft or dpo with several processes"
        )
    if fsdp and config.device == "cpu":
        raise ConfigurationError(
            "train.fsdp shards the model over GPUs; accelerate does not apply FSDP to CPU processes (they would "
            "train as plain data parallel): turn train.fsdp off on the CPU"
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    job, result = work_dir / "distributed-job.json", work_dir / "distributed-result.json"
    result.unlink(missing_ok=True)
    write_job(job, base_model_dir, examples, config)
    command = launch_command(job, processes=processes, config=config, fsdp=fsdp)
    env = dict(os.environ, TAOFLOW_TRAIN_OWNER=str(os.getpid()))
    if config.device == "cpu":
        # gloo workers on the CPU: each gets its share of the cores instead of all of them each.
        env["ACCELERATE_USE_CPU"] = "true"
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // processes))
    log.info("training on %d processes (%s): %s", processes, config.device, " ".join(command))
    try:
        tail = _run(command, env, progress)
    finally:
        job.unlink(missing_ok=True)  # its examples are prompts; the next attempt writes it again
    if not result.is_file():
        raise RoundError(
            f"distributed training on {processes} processes ended without an adapter; its last lines:\n"
            + "\n".join(tail)
        )
    data = json.loads(result.read_text())
    return TrainingResult(adapter_dir=work_dir / "adapter", **data)


def launch_command(job: Path, *, processes: int, config: TrainingConfig, fsdp: bool) -> list[str]:
    precision = {"bfloat16": "bf16", "float16": "fp16"}.get(config.dtype, "no")
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--use_fsdp" if fsdp else "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        precision,
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
    ]
    if fsdp:
        # Shard parameters, gradients and optimiser state over the workers, one decoder layer per unit.
        command += [
            "--fsdp_version",
            "2",
            "--fsdp_auto_wrap_policy",
            "TRANSFORMER_BASED_WRAP",
            "--fsdp_state_dict_type",
            "FULL_STATE_DICT",
            "--fsdp_cpu_ram_efficient_loading",
            "false",
        ]
    return [*command, "-m", "taoflow.connectors.training.worker", str(job)]


def _run(command: list[str], env: dict[str, str], progress: Progress | None) -> list[str]:
    """Run the launcher, turning its step marks into progress; returns its last lines for an error message."""
    tail: deque[str] = deque(maxlen=20)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == STEP_MARK:
                if progress is not None:
                    progress(1)
                continue
            tail.append(line.rstrip()[:500])
            log.debug("train: %s", line.rstrip()[:500])
        code = process.wait()
    except BaseException:
        # The round was stopped: the launcher passes SIGTERM on to its workers; their checkpoints stay.
        process.terminate()
        try:
            process.wait(timeout=_STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    if code != 0:
        raise RoundError(f"distributed training exited with status {code}; its last lines:\n" + "\n".join(tail))
    return list(tail)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- the job file
def write_job(path: Path, base_model_dir: Path, examples: Examples, config: TrainingConfig) -> None:
    rows: list[dict[str, Any]] = []
    for e in examples:
        if isinstance(e, DistillExample):
            rows.append({**_prompt_row(e), "completion": e.completion})
        elif isinstance(e, PreferenceExample):
            rows.append({**_prompt_row(e), "chosen": e.chosen, "rejected": e.rejected})
    settings = {f.name: getattr(config, f.name) for f in fields(config)}
    settings["target_modules"] = list(config.target_modules)
    settings["init_adapter"] = str(config.init_adapter) if config.init_adapter else None
    write_atomic(path, json.dumps({"base_model_dir": str(base_model_dir), "config": settings, "examples": rows}))


def _prompt_row(example: DistillExample | PreferenceExample) -> dict[str, Any]:
    """An example's prompt in the shape `PromptRecord.from_json` reads back: its messages and tools."""
    row: dict[str, Any] = {"messages": [m.as_dict() for m in example.messages]}
    if example.tools:
        row["tools"] = [t.as_dict() for t in example.tools]
    return row


def read_job(path: Path) -> tuple[Path, list[DistillExample] | list[PreferenceExample], TrainingConfig]:
    data = json.loads(path.read_text())
    settings = dict(data["config"])
    settings["target_modules"] = tuple(settings["target_modules"])
    settings["init_adapter"] = Path(settings["init_adapter"]) if settings["init_adapter"] else None
    config = TrainingConfig(**settings)
    rows: Sequence[dict[str, Any]] = data["examples"]
    prompts = [PromptRecord.from_json(json.dumps({"request_id": "", "task": "", **row})) for row in rows]
    examples: list[DistillExample] | list[PreferenceExample]
    if config.objective == "dpo":
        examples = [
            PreferenceExample(p.messages, r["chosen"], r["rejected"], tools=p.tools)
            for p, r in zip(prompts, rows, strict=True)
        ]
    else:
        examples = [
            DistillExample(p.messages, r["completion"], tools=p.tools) for p, r in zip(prompts, rows, strict=True)
        ]
    return Path(data["base_model_dir"]), examples, config


def write_result(path: Path, result: TrainingResult) -> None:
    data = {k: v for k, v in asdict(result).items() if k != "adapter_dir"}
    write_atomic(path, json.dumps(data))

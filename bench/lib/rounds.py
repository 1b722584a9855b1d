"""A benchmark's rounds as `taoflow round` runs them: a side's settings file whose gate promotes every adapter (one
evaluator outside the rounds judges them), and one round on new prompts, read back through the round store."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import yaml

from bench.lib.tasks import TAOFLOW, record
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.buffer import PromptBuffer
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.state import open_state

__all__ = ["one_round", "promoting_config"]


def promoting_config(work: Path, name: str, task, *, generate: dict, train: dict) -> Path:
    """A side's settings file: the bench's model and budget, its own state directory, and a gate that promotes
    every adapter (one evaluator outside the rounds judges them)."""
    data = {
        "model": {"served_name": "bench"},
        "storage": {"state_dir": str(work / name)},
        "ingest": {"heldout_fraction": 0.0},
        "generate": {"temperature": 0.7, "max_new_tokens": 32, **generate},
        "score": {"tasks": {task.name: task.verifier}},
        "train": {"lora_rank": 16, "epochs": 3, "learning_rate": 1e-3, "batch_size": 8, **train},
        "gate": {
            "min_samples": 4,
            "max_new_tokens": generate.get("max_new_tokens", 32),
            "min_mean_improvement": -1.0,
            "max_slice_regression": 1.0,
            "confidence": 0.0,
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def one_round(path: Path, task, prompts, first_id: int, gate_prompts) -> dict:
    state = open_state(load_settings(path))
    state.buffer.add_many([(record(task, first_id + i, p), None) for i, p in enumerate(prompts)], source="bench")
    heldout = PromptBuffer(state.db, heldout_fraction=1.0, heldout_max_per_task=len(gate_prompts))
    heldout.add_many([(record(task, 100_000 + i, p), None) for i, p in enumerate(gate_prompts)], source="bench")
    started = time.perf_counter()
    subprocess.run([str(TAOFLOW), "round", "--config", str(path), "--no-progress"], check=False)
    seconds = time.perf_counter() - started
    latest = RoundStore(state.db, state.rounds_dir).latest("bench")
    assert latest is not None, "`taoflow round` recorded no round"
    adapter = state.store.fetch(latest.version) if latest.version else None
    champion = state.registry.alias("bench", "champion")
    state.close()
    train, generate = latest.summary.train, latest.summary.generate
    return {
        "status": latest.status,
        "adapter": adapter,
        "init": train.init if train else None,
        "examples": train.examples if train else None,
        "candidate_tokens": generate.tokens if generate else 0,
        "champion": champion,
        "seconds": seconds,
    }

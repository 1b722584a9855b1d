"""The tiny round the round tests share (the real model, a few prompts, a gate that always decides), and a state
seeded with arithmetic prompts for it."""

from __future__ import annotations

from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.state import State

TINY = {
    "generate": {"n": 3, "max_prompts": 6, "max_new_tokens": 24, "temperature": 0.8},
    "train": {"epochs": 1, "batch_size": 4, "score_threshold": 0.5, "save_steps": 1},
    "gate": {
        "min_samples": 4,
        "min_slice_samples": 2,
        "max_new_tokens": 24,
        "min_mean_improvement": -1.0,
        "max_slice_regression": 1.0,
    },
    "ingest": {"heldout_fraction": 0.4, "heldout_max_per_task": 4},
    "score": {"tasks": {"math": [{"type": "arithmetic"}, {"type": "length", "params": {"max_chars": 40}}]}},
}


def flywheel_round(task: str, *, min_new_prompts: int, cooldown_s: float) -> dict[str, dict]:
    """The settings of a daemon's round that tests of the loop share: a few prompts, 2 candidates, any scored
    answer a target and any adapter passing the gate (they test the loop, not the lift)."""
    return {
        "ingest": {"heldout_fraction": 0.3, "heldout_max_per_task": 4},
        "generate": {"n": 2, "max_prompts": 8, "max_new_tokens": 16},
        "score": {"tasks": {task: [{"type": "arithmetic"}]}},
        "train": {"score_threshold": 0.0, "epochs": 1, "batch_size": 4},
        "gate": {"min_samples": 2, "min_slice_samples": 2, "min_mean_improvement": -1.0, "max_slice_regression": 1.0},
        "retrain": {"min_new_prompts": min_new_prompts, "cooldown_seconds": cooldown_s, "evaluate_interval_seconds": 1},
    }


def seeded_state(tmp_path, **overrides) -> State:
    config = {**TINY, **{k: {**TINY.get(k, {}), **v} for k, v in overrides.items()}}
    settings = load_settings(None, storage={"state_dir": str(tmp_path / "state")}, **config)
    state = State(settings)
    records = [
        PromptRecord(f"r{i}", "math", (Message("user", f"What is {10 + i} + {20 + 2 * i}?"),)) for i in range(16)
    ]
    state.buffer.add_many([(r, None) for r in records], source="test")
    return state

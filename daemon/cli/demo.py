"""`taoflow demo`: the whole loop on embedded defaults, on a fresh CPU machine.

Ingests the shipped sample logs (two task families in OpenAI and Databricks shapes,
with a few malformed lines), runs one round on SmolLM2-135M-Instruct, gates the
adapter against the base model on held-out prompts, promotes it and prints the
before/after scores per task.
"""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path

from taoflow.daemon.cli import report
from taoflow.daemon.ingest.configured import build_ingestor, build_source
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.state import open_state
from taoflow.daemon.wiring import build_round

__all__ = ["SAMPLES", "run_demo"]

SAMPLES = Path(str(files("taoflow.daemon.cli") / "samples"))


def run_demo(*, state_dir: Path | None = None, config: Path | None = None, max_prompts: int | None = None) -> int:
    """`max_prompts`: a smaller round than the demo's (its held-out prompts, the gate's, stay the same)."""
    started = time.perf_counter()
    root = (state_dir or Path(".taoflow-demo")) / time.strftime("run-%Y%m%d-%H%M%S")
    settings = load_settings(
        config or SAMPLES / "demo.yaml",
        storage={"state_dir": str(root)},
        source={"paths": [str(SAMPLES / "arithmetic.jsonl"), str(SAMPLES / "json_extract.jsonl")]},
    )
    print(f"taoflow demo: state in {root}")
    state = open_state(settings)
    source = build_source(settings)
    ingested = build_ingestor(settings, state, source.name).run(source.read())
    print(
        f"\n1. ingest: read {ingested.read} log records, buffered {ingested.added}, folded "
        f"{ingested.duplicates} duplicates, dead-lettered {sum(ingested.dead_lettered.values())} "
        f"({', '.join(f'{k}: {v}' for k, v in sorted(ingested.dead_lettered.items()))})"
    )
    print(report.buffer_table(state.buffer.stats()))
    print(f"\n2. round: base model {settings.model.base} (converted and cached on first use)")
    tao_round = build_round(settings, state, progress=report.tqdm_progress, max_prompts=max_prompts)
    record = tao_round.run()
    summary = record.summary
    for task, stats in (summary.score.tasks if summary.score else {}).items():
        print(
            f"   {task}: {stats.candidates} candidates, mean score {stats.mean}, "
            f"{stats.prompts_with_target}/{stats.prompts} prompts with an answer to learn from"
            + (f" (selection {stats.selection}: {stats.selection_reason})" if stats.selection_reason else "")
        )
    train = summary.train
    left_out = f" ({train.too_long} left out: longer than train.max_length)" if train and train.too_long else ""
    print(f"   trained on {train.examples if train else None} examples{left_out}")
    print("\n3. gate on held-out prompts (greedy), candidate vs base:\n")
    print(report.round_table(record))
    registry = state.registry
    print("\n4. registry:\n" + report.adapters_table(registry.versions(), registry, settings.model.served_name))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    state.close()
    return 0 if summary.gate is not None and summary.gate.passed else 3

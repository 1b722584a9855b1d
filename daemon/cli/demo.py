"""`taoflow demo`: the whole loop on embedded defaults, on a fresh CPU machine.

Ingests the shipped sample logs (two task families in OpenAI and Databricks shapes,
with a few malformed lines), runs one round on SmolLM2-135M-Instruct, gates the
adapter against the base model on held-out prompts, promotes it and prints the
before/after scores per task. `--task tool_use` does the same for an agent endpoint's
sessions (tools, earlier calls and results, in all three APIs' shapes) and prints the
rate of valid tool calls before and after.
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

__all__ = ["DEMOS", "SAMPLES", "run_demo"]

SAMPLES = Path(str(files("taoflow.daemon.cli") / "samples"))
#: Each demo: its settings file and its sample logs.
DEMOS = {
    "default": ("demo.yaml", ("arithmetic.jsonl", "json_extract.jsonl")),
    "tool_use": ("tool_use.yaml", ("tool_use.jsonl",)),
}


def run_demo(
    *,
    state_dir: Path | None = None,
    config: Path | None = None,
    max_prompts: int | None = None,
    task: str = "default",
) -> int:
    """`max_prompts`: a smaller round than the demo's (its held-out prompts, the gate's, stay the same)."""
    started = time.perf_counter()
    root = (state_dir or Path(".taoflow-demo")) / time.strftime("run-%Y%m%d-%H%M%S")
    settings_file, logs = DEMOS[task]
    settings = load_settings(
        config or SAMPLES / settings_file,
        storage={"state_dir": str(root)},
        source={"paths": [str(SAMPLES / log) for log in logs]},
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
    if task == "tool_use" and summary.gate is not None:
        for s in summary.gate.slices:
            print(
                f"\n   valid tool calls on {s.n} held-out sessions: {s.champion_mean:.1%} before, "
                f"{s.candidate_mean:.1%} after ({s.task})"
            )
    registry = state.registry
    print("\n4. registry:\n" + report.adapters_table(registry.versions(), registry, settings.model.served_name))
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    state.close()
    return 0 if summary.gate is not None and summary.gate.passed else 3

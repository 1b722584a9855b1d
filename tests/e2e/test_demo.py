"""`taoflow demo` as a user runs it: the whole loop on embedded defaults, lifting every task. CI runs it on 64 of the
demo's 160 training prompts (`--max-prompts 64`: about 3 minutes on 2 cores instead of 9; the same held-out prompts
and gate); README.md gives the full demo's figures."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_raises_every_task_and_promotes(tmp_path):
    started = time.monotonic()
    taoflow = Path(sys.executable).parent / "taoflow"
    result = subprocess.run(
        [str(taoflow), "demo", "--state-dir", str(tmp_path), "--max-prompts", "64"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    # Clean output: no library's warning (a deprecated name, an advisory) between the demo's lines; -v shows them.
    warned = [line for line in (out + result.stderr).splitlines() if re.search(r"\w+Warning\b|warnings\.warn", line)]
    assert warned == [], warned
    # The gate table: task, held-out prompts compared, before, after, change, prompts whose score changed, prompts
    # left out because an answer could not be scored.
    table = r"^(arithmetic|json_extract)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([+-][\d.]+)\s+(\d+)\s+(\d+)$"
    rows = re.findall(table, out, re.M)
    assert {r[0] for r in rows} == {"arithmetic", "json_extract"}, out
    for task, n, before, after, _, changed, unscored in rows:
        assert int(n) >= 16 and 0 < int(changed) <= int(n) and int(unscored) == 0  # verifiers score every answer
        assert float(after) > float(before), f"{task} did not improve: {before} -> {after}"
    assert "gate PASSED" in out and "promoted to champion" in out
    assert "dead-lettered 4" in out
    print(out)
    print(f"demo wall time {time.monotonic() - started:.0f} s")


def test_the_tool_use_demo_trains_agent_sessions_only_toward_valid_calls(tmp_path):
    """`taoflow demo --task tool_use` at a CI size (16 training sessions, a few minutes): it ingests the agent logs
    of all three APIs whole, renders them with their tools, and trains only on answers that are valid calls; the
    gate compares the rate of valid calls on the held-out sessions (here 3.7% -> 96.3% from 4 examples; README.md
    gives the full demo's figures)."""
    from taoflow.connectors.scoring.tool_use import ToolCallScorer
    from taoflow.daemon.cli.demo import SAMPLES
    from taoflow.daemon.round.candidates import selection_of, training_examples
    from taoflow.daemon.settings import load_settings
    from taoflow.daemon.store.rounds import RoundStore
    from taoflow.daemon.store.state import open_state

    taoflow = Path(sys.executable).parent / "taoflow"
    result = subprocess.run(
        [str(taoflow), "demo", "--task", "tool_use", "--state-dir", str(tmp_path), "--max-prompts", "16"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    out = result.stdout
    # 3: the gate rejected the adapter. At this size its lift may not clear the noise bound; it is recorded either way.
    assert result.returncode in (0, 3), out[-3000:] + result.stderr[-3000:]
    assert ("gate PASSED" in out) == (result.returncode == 0) and "gate" in out
    assert "read 160 log records, buffered 160" in out and "dead-lettered 0" in out
    found = re.search(r"valid tool calls on (\d+) held-out sessions: ([\d.]+)% before, ([\d.]+)% after", out)
    assert found and int(found[1]) >= 16, out
    (run,) = tmp_path.iterdir()
    settings = load_settings(SAMPLES / "tool_use.yaml", storage={"state_dir": str(run)})
    state = open_state(settings)
    record = RoundStore(state.db, state.rounds_dir).get(1)
    scored = record.files.scored()
    assert all(prompt.tools and prompt.tool_choice == "required" for prompt, _ in scored)
    examples = training_examples(scored, selection_of(settings, scored))
    assert examples and len(examples) == record.summary.train.examples, out
    scorer = ToolCallScorer(parser="hermes")
    for prompt, _ in scored:
        mine = [e for e in examples if e.messages == prompt.messages]
        assert all(e.tools == prompt.tools for e in mine)
        assert scorer.score(prompt, [e.completion for e in mine]) == [1.0] * len(mine)  # never text, never invalid
    print(out)

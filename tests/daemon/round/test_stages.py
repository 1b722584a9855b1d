"""Both runners are made of the same stage bodies (daemon/round/stages.py): the local stages, and the Ray runner's
two sides (the daemon's, and the job's program on the cluster). A runner that stops calling a body (writing its
own copy instead) fails here, as does one whose actors score differently from a local round."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from taoflow.connectors.protocols import Completion
from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.round import stages
from taoflow.daemon.round.parts import build_scorers
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.round_files import read_scored_line, scored_line

ROUND = Path(stages.__file__).parent

RUNNERS = {
    "local": ["local_stages.py"],
    "ray": ["ray_stages.py", "on_ray.py"],
}


def stage_bodies_called(files: list[str]) -> set[str]:
    """Every `stages.<name>` a runner's modules use."""
    used: set[str] = set()
    for name in files:
        tree = ast.parse((ROUND / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "stages":
                used.add(node.attr)
    return used


@pytest.mark.parametrize("runner", sorted(RUNNERS))
@pytest.mark.parametrize("stage", sorted(stages.STAGE_BODIES))
def test_every_runner_calls_every_body_of_each_stage(runner, stage):
    missing = set(stages.STAGE_BODIES[stage]) - stage_bodies_called(RUNNERS[runner])
    assert not missing, (
        f"the {runner} runner's {stage} stage no longer calls stages.{', stages.'.join(sorted(missing))}"
    )


def test_the_bodies_exist_and_no_runner_defines_its_own():
    bodies = {body for names in stages.STAGE_BODIES.values() for body in names}
    assert bodies <= set(stages.__all__)
    for files in RUNNERS.values():
        for name in files:
            tree = ast.parse((ROUND / name).read_text())
            defined = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
            assert not defined & bodies, f"{name} defines {defined & bodies} again"


def test_the_jobs_scoring_actor_scores_as_a_local_round_does(tmp_path):
    """What a Ray scoring actor returns (on_ray._Scoring, called here without Ray) is the local round's scored
    file, line for line, and the job's score summary is the local one."""
    from taoflow.daemon.round import on_ray

    sections = {"score": {"tasks": {"math": [{"type": "arithmetic"}]}, "sandbox": {"enabled": False}}}
    settings = load_settings(None, storage={"state_dir": str(tmp_path)}, **sections)
    records = [PromptRecord(f"r{i}", "math", (Message("user", f"What is {i} + 2?"),)) for i in range(3)]
    answers = {
        r.request_id: [Completion(str(i + 2), 2, True), Completion("no", 1, True)] for i, r in enumerate(records)
    }
    local = stages.score_candidates(records, answers, build_scorers(settings))
    columns = {
        "request_id": [r.request_id for r in records],
        "record": [r.to_json() for r in records],
        "candidates": [
            '[{"text": "%s", "num_tokens": 2, "finished": true}, {"text": "no", "num_tokens": 1, "finished": true}]'
            % (i + 2)
            for i in range(3)
        ],
    }
    shipped = {"score": settings.score.model_dump(mode="json")}
    lines = on_ray._Scoring(shipped)(columns)["scored"]
    assert lines == [scored_line(r, cs) for r, cs in local]
    on_cluster = [read_scored_line(line) for line in lines]
    assert stages.score_summary(on_cluster, settings, None) == stages.score_summary(local, settings, None)


def test_the_jobs_program_imports_without_ray():
    """What actors run is importable without Ray (and a test process importing it starts no Ray state: a Ray
    imported there would fix its token mode for the clusters later tests start)."""
    import subprocess
    import sys

    code = "import sys, taoflow.daemon.round.on_ray; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

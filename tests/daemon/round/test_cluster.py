"""The daemon's side of a round on Ray, against a Jobs API that answers what a real cluster cannot be made to
answer on demand (`httpx.MockTransport`): a job that never starts, a cluster that drops the job. A real cluster
runs whole rounds in tests/e2e/test_ray_round.py."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from taoflow.connectors.cluster.exchange import Exchange
from taoflow.connectors.cluster.jobs import RayJobs
from taoflow.connectors.errors import ConfigurationError, RoundError
from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.training.lora import TrainingConfig
from taoflow.daemon.round.ray_job import RayRoundJob, RoundInputs
from taoflow.daemon.settings import load_settings, ray_runner_problems
from taoflow.daemon.store.rounds import RoundRecord
from taoflow.daemon.store.summaries import RoundSummary


class FakeJobsApi:
    """Jobs submitted stay in `status`; stops are recorded."""

    def __init__(self, status: str = "PENDING") -> None:
        self.status, self.submitted, self.stopped = status, [], []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/api/jobs/":
            self.submitted.append(json.loads(request.content)["submission_id"])
            return httpx.Response(200, json={})
        job = path.split("/")[3]
        if job not in self.submitted:
            return httpx.Response(404, text="no such job")
        if path.endswith("/stop"):
            self.stopped.append(job)
            return httpx.Response(200, json={"stopped": True})
        if path.endswith("/logs"):
            return httpx.Response(200, json={"logs": "stage generate: starting\n"})
        return httpx.Response(200, json={"submission_id": job, "status": self.status, "message": "waiting"})


def cluster_round(tmp_path, api: FakeJobsApi, **ray) -> RayRoundJob:
    settings = load_settings(
        None,
        round={"runner": "ray"},
        ray={"address": "http://head:8265", "exchange": {"uri": str(tmp_path / "x")}, "poll_seconds": 0.05, **ray},
    )
    jobs = RayJobs("http://head:8265", transport=httpx.MockTransport(api))
    return RayRoundJob(settings, jobs=jobs, exchange=Exchange(str(tmp_path / "x")))


def record(tmp_path) -> RoundRecord:
    (tmp_path / "work").mkdir(exist_ok=True)
    return RoundRecord(1, "taoflow", "prepare", "running", "", tmp_path / "work", None, 1.7e9, 1.7e9, RoundSummary())


def inputs() -> RoundInputs:
    prompts = [PromptRecord(f"r{i}", "math", (Message("user", f"{i} + 1?"),)) for i in range(3)]
    return RoundInputs(prompts, [4, 4, 8], prompts[:1], [], [], TrainingConfig(), None, None)


def test_a_job_the_cluster_never_starts_is_stopped_and_fails_the_round_after_the_placement_timeout(tmp_path):
    api = FakeJobsApi("PENDING")
    runner = cluster_round(tmp_path, api, placement_timeout_seconds=0.3)
    with pytest.raises(RoundError, match=r"did not start job .* within ray.placement_timeout_seconds \(0.3 s\)"):
        runner.run(record(tmp_path), inputs())
    assert api.stopped == api.submitted == ["taoflow-taoflow-r0001-20231114221320-a1"]
    # The inputs went first: each prompt with its candidates and the seed of its generation batch.
    rows = list(
        Exchange(str(tmp_path / "x")).child("taoflow", "r0001-20231114221320").read_rows("inputs/prompts.parquet")
    )
    assert [(r["request_id"], r["n"], r["seed"]) for r in rows] == [("r0", 4, 1), ("r1", 4, 1), ("r2", 8, 1)]


def test_an_interrupted_round_stops_its_job_and_the_next_run_submits_the_next_attempt(tmp_path, monkeypatch):
    api = FakeJobsApi("RUNNING")
    runner = cluster_round(tmp_path, api)
    real_sleep = time.sleep

    def sleep(seconds):  # SIGTERM arrives while the round waits on its job: the handler raises there
        if api.submitted:
            raise KeyboardInterrupt
        real_sleep(seconds)

    monkeypatch.setattr("taoflow.daemon.round.ray_job.time.sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        runner.run(record(tmp_path), inputs())
    monkeypatch.undo()
    assert api.stopped == ["taoflow-taoflow-r0001-20231114221320-a1"]
    # The cluster keeps the stopped job; the round started again submits attempt 2 beside it (which this fake
    # reports stopped too: the round fails saying so).
    api.status = "STOPPED"
    with pytest.raises(RoundError, match=r"Ray job taoflow-taoflow-r0001-20231114221320-a2 stopped"):
        runner.run(record(tmp_path), inputs())
    assert api.submitted == ["taoflow-taoflow-r0001-20231114221320-a1", "taoflow-taoflow-r0001-20231114221320-a2"]
    assert json.loads((tmp_path / "work" / "ray-job.json").read_text())["attempt"] == 2


def test_the_ray_runner_says_what_its_settings_lack():
    settings = load_settings(
        None,
        round={"runner": "ray"},
        generate={"backend": "fleet"},
        train={"objective": "grpo"},
        score={"default": [{"type": "reward_model", "params": {"model": "x"}}]},
    )
    problems = " | ".join(ray_runner_problems(settings))
    for expected in (
        "ray.address is unset",
        "ray.exchange.uri is unset",
        "generate.backend fleet",
        "grpo",
        "reward_model",
    ):
        assert expected in problems
    with pytest.raises(ConfigurationError, match=r"round\.runner is ray, but ray\.address is unset"):
        RayRoundJob(settings)
    assert ray_runner_problems(load_settings(None)) == []

"""Rounds as Ray jobs (`round.runner: ray`) on a real Ray cluster on loopback: a head node with the Jobs API (token
authentication on) and worker nodes, the real small model in the generation actors, real Ray Train workers
(gloo), and the real S3 endpoint (moto's server) as the exchange. Nodes are killed mid-stage."""

from __future__ import annotations

import json
import threading

import boto3
import pytest

from taoflow.connectors.artifacts.local import check_adapter_dir
from taoflow.connectors.cluster.exchange import Exchange
from taoflow.connectors.cluster.jobs import RayJobs
from taoflow.connectors.errors import RoundError
from taoflow.daemon.round.ray_stages import RayStages
from taoflow.daemon.round.recipe import TaoRound
from tests.support.brokers import moto_s3
from tests.support.processes import poll_until
from tests.support.rounds import seeded_state
from tests.support.servers import RayTestCluster

pytestmark = pytest.mark.slow

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as endpoint:
        import os

        os.environ.update(S3_ENV)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="rounds")
        yield endpoint


@pytest.fixture
def ray_cluster(s3):
    cluster = RayTestCluster(head_cpus=0, env=S3_ENV)
    try:
        yield cluster
    finally:
        cluster.shutdown()


def ray_state(tmp_path, cluster, s3, **overrides):
    ray = {
        "address": cluster.address,
        "token": RayTestCluster.TOKEN,
        "exchange": {"uri": f"s3://rounds/{tmp_path.name}", "endpoint_url": s3},
        "poll_seconds": 0.5,
        "placement_timeout_seconds": 120,
        **overrides.pop("ray", {}),
    }
    return seeded_state(tmp_path, round={"runner": "ray"}, ray=ray, **overrides)


def ray_round(state) -> TaoRound:
    # No generator on this side: the stages of a round on the cluster have none to call.
    return TaoRound(state.settings, state, stages=RayStages(state.settings, state))


def job_log(cluster, state, record_id: int = 1) -> str:
    jobs = RayJobs(cluster.address, token=RayTestCluster.TOKEN)
    work = state.rounds_dir
    found = sorted(work.glob("*/ray-job.json"))
    if not found:
        return ""
    try:
        return jobs.logs(json.loads(found[-1].read_text())["submission_id"])
    except RoundError:  # recorded, not yet submitted
        return ""


def run_replacing_node(cluster, state, node, *, after: str, deadline_s: float):
    """The round, with `node` replaced by a new one once the job's log shows `after`: a node lost mid-stage, as an
    autoscaler replaces it. A round that fails, or never reaches `after`, fails the test with its error."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["record"] = ray_round(state).run()
        except BaseException as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    poll_until(lambda: after in job_log(cluster, state) or not runner.is_alive(), deadline_s=deadline_s, message=after)
    assert "error" not in outcome, outcome.get("error")
    cluster.add_worker(cpus=2)
    cluster.remove_worker(node)
    runner.join(timeout=600)
    assert not runner.is_alive(), "the round did not end within 600 s of the node's loss"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["record"]


def test_a_round_runs_as_a_ray_job_across_two_nodes(tmp_path, s3, ray_cluster, base_model, monkeypatch):
    specs: list[tuple[str, str]] = []  # each round folder's spec, read as the folder is removed
    remove_all = Exchange.remove_all

    def keeping_the_spec(folder: Exchange) -> None:
        specs.append((folder.path("inputs/spec.json"), folder.read_bytes("inputs/spec.json").decode()))
        remove_all(folder)

    monkeypatch.setattr(Exchange, "remove_all", keeping_the_spec)
    ray_cluster.add_worker(cpus=1)
    ray_cluster.add_worker(cpus=1)
    state = ray_state(tmp_path, ray_cluster, s3, ray={"train": {"workers": 2}})
    record = ray_round(state).run()
    assert (record.status, record.step) == ("done", "done"), record.reason
    summary = record.summary
    assert summary.generate.runner == "ray" and summary.generate.job.startswith("taoflow-taoflow-r0001-")
    assert summary.generate.candidates == 3 * summary.prepare.prompts
    assert summary.score.tasks["math"].candidates == summary.generate.candidates
    train = summary.train
    assert train.workers == 2 and train.steps >= 1 and train.final_loss is not None
    assert train.examples == summary.score.examples and train.resumed_from is None
    gate = summary.gate
    assert gate.against == "base" and gate.slices[0].n == state.buffer.stats().tasks["math"].heldout
    adapter = state.store.fetch(record.version)
    assert check_adapter_dir(adapter)["r"] == 16
    manifest = json.loads((adapter / "taoflow-manifest.json").read_text())
    assert manifest["base_model"] == {"reference": "smollm2-135m-instruct", "digest": base_model.digest}
    # The candidates came home whole: every prompt with its three candidates.
    rows = [json.loads(line) for line in (record.work_dir / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == summary.prepare.prompts and all(len(r["candidates"]) == 3 for r in rows)
    # The token never travels to the cluster with the round's settings.
    ((spec, sent),) = specs
    assert spec.startswith(f"rounds/{tmp_path.name}/taoflow/r0001-")
    assert RayTestCluster.TOKEN not in sent and '"round": 1' in sent
    # Once its outputs are home, nothing of the round stays on the exchange (its prompts, candidates, scores).
    client = boto3.client("s3", endpoint_url=s3)
    left = client.list_objects_v2(Bucket="rounds", Prefix=tmp_path.name).get("Contents", [])
    assert [o["Key"] for o in left if o["Size"] or "/r0001-" in o["Key"]] == []  # the parents' empty markers only


def test_a_stage_the_cluster_cannot_place_fails_the_round_with_the_reason(tmp_path, s3, ray_cluster):
    ray_cluster.add_worker(cpus=2)
    state = ray_state(tmp_path, ray_cluster, s3, ray={"generation": {"gpus": 1}, "placement_timeout_seconds": 3})
    with pytest.raises(
        RoundError, match=r"could not place generation within ray.placement_timeout_seconds \(3 s\).*GPU: 1"
    ):
        ray_round(state).run()
    (record,) = state.db.query("SELECT status, reason FROM rounds")
    assert record[0] == "failed" and "GPU" in record[1]


def test_a_node_lost_during_generation_loses_no_candidate(tmp_path, s3, ray_cluster):
    first = ray_cluster.add_worker(cpus=2)
    state = ray_state(tmp_path, ray_cluster, s3, ray={"generation": {"batch": 2}})
    record = run_replacing_node(ray_cluster, state, first, after="generation actor ready", deadline_s=240)
    assert record.status == "done", record.reason
    rows = [json.loads(line) for line in (record.work_dir / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == record.summary.prepare.prompts and all(len(r["candidates"]) == 3 for r in rows)


def test_a_node_lost_during_training_resumes_from_its_checkpoint(tmp_path, s3, ray_cluster):
    first = ray_cluster.add_worker(cpus=2)
    state = ray_state(tmp_path, ray_cluster, s3, train={"epochs": 4}, ray={"train": {"workers": 2}})
    record = run_replacing_node(ray_cluster, state, first, after="checkpoint of step 1", deadline_s=400)
    assert record.status == "done", record.reason
    assert record.summary.train.resumed_from is not None


def test_a_round_stopped_at_shutdown_and_killed_with_the_daemon_runs_its_job_once_per_attempt(
    tmp_path, s3, ray_cluster
):
    """`taoflow round` as the daemon runs it: SIGTERM stops its job (the next attempt goes on from the stages the
    stopped one finished); killed outright, it leaves its job running, and the round started again follows that
    job instead of submitting another. The round's process never imports Ray."""
    import os
    import signal
    import subprocess
    import sys

    import httpx
    import yaml

    from tests.support.rounds import TINY

    ray_cluster.add_worker(cpus=2)
    # The generation actor takes every CPU of the cluster: Parquet reads and writes must still run beside it.
    state = ray_state(tmp_path, ray_cluster, s3, ray={"generation": {"cpus": 2}})
    config = tmp_path / "taoflow.yaml"
    sections = {**TINY, "storage": {"state_dir": str(tmp_path / "state")}, "round": {"runner": "ray"}}
    sections["ray"] = state.settings.ray.model_dump(mode="json", exclude={"token"})
    config.write_text(yaml.safe_dump(sections))
    env = {**os.environ, "TAOFLOW_RAY__TOKEN": RayTestCluster.TOKEN}
    command = [sys.executable, "-m", "taoflow.daemon.cli", "round", "--config", str(config), "--no-progress"]
    headers = {"Authorization": f"Bearer {RayTestCluster.TOKEN}"}

    def jobs() -> dict[str, str]:
        listed = httpx.get(f"{ray_cluster.address}/api/jobs/", headers=headers, timeout=10).json()
        return {j["submission_id"]: j["status"] for j in listed if j.get("submission_id", "").startswith("taoflow-")}

    def attempt() -> int:
        found = sorted((tmp_path / "state").glob("rounds/*/ray-job.json"))
        return json.loads(found[0].read_text())["attempt"] if found else 0

    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    poll_until(lambda: "stage generate: done" in job_log(ray_cluster, state), deadline_s=300, message="generation")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 130
    poll_until(lambda: list(jobs().values()) == ["STOPPED"], deadline_s=60, message="the first attempt stopped")

    second = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    poll_until(lambda: attempt() == 2 and "RUNNING" in jobs().values(), deadline_s=120, message="attempt 2")
    second.kill()
    second.wait(timeout=30)

    third = subprocess.run(
        [sys.executable, "-X", "importtime", *command[1:]], env=env, capture_output=True, text=True, timeout=900
    )
    assert third.returncode in (0, 3), third.stderr[-3000:]
    statuses = jobs()
    assert sorted(statuses.values()) == ["STOPPED", "SUCCEEDED"] and len(statuses) == 2
    from taoflow.daemon.store.rounds import RoundStore

    record = RoundStore(state.db, state.rounds_dir).get(1)
    assert record.status == "done" and record.summary.generate.job.endswith("-a2")
    log = job_log(ray_cluster, state)
    assert "stage generate: done by an earlier attempt" in log
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in third.stderr.splitlines() if line.startswith("import time:")
    }
    assert not {m for m in imported if m == "ray" or m.startswith("ray.")}
    assert "pyarrow" in imported  # the check can fail: the round's process imports what it uses


def test_a_round_on_the_cluster_with_nothing_to_learn_is_skipped_and_its_prompts_kept_for_another_try(
    tmp_path, s3, ray_cluster
):
    ray_cluster.add_worker(cpus=2)
    state = ray_state(
        tmp_path,
        ray_cluster,
        s3,
        generate={"retry_unsolved": 1},
        train={"selection": "relative", "relative_margin": 0.1},
        score={"tasks": {"math": [{"type": "regex", "params": {"pattern": "^never matches$"}}]}},
    )
    record = ray_round(state).run()
    assert (record.status, record.step) == ("skipped", "score")  # the job trained nothing and evaluated nothing
    assert record.version is None and state.registry.versions() == []
    prompts = record.summary.prepare.prompts
    assert record.reason.startswith(f"no candidate of {prompts} prompts beat their group's mean by 0.1")
    assert record.summary.skipped_at == "train" and record.summary.skip.retry == prompts
    assert not record.files.adapter_dir.exists()

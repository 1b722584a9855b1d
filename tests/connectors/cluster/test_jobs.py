"""The Jobs API client's failure paths, against `httpx.MockTransport` (the real cluster is in
tests/e2e/test_ray_round.py): answers a cluster gives that a test cannot make it give on demand."""

from __future__ import annotations

import json

import httpx
import pytest

from taoflow.connectors.cluster.jobs import RayJobs
from taoflow.connectors.errors import ConfigurationError, RoundError, TemporaryError

TOKEN = "cluster-token-0123456789"


def jobs_answering(handler) -> RayJobs:  # type: ignore[no-untyped-def]
    return RayJobs("http://head:8265/", token=TOKEN, transport=httpx.MockTransport(handler))


def test_the_token_is_sent_as_a_bearer_token_and_a_refusal_says_which_setting_to_fix():
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(401, text="Unauthorized: Invalid authentication token")

    with pytest.raises(ConfigurationError, match=r"ray\.token") as caught:
        jobs_answering(handler).info("taoflow-x-a1")
    assert seen == [f"Bearer {TOKEN}"] and TOKEN not in str(caught.value)


def test_a_job_the_cluster_does_not_know_is_none_and_stopping_it_is_false():
    jobs = jobs_answering(lambda request: httpx.Response(404, text="Job x does not exist"))
    assert jobs.info("x") is None
    assert jobs.stop("x") is False


def test_a_server_error_is_temporary_and_brief():
    traceback = "Traceback (most recent call last):\n  File ...\n" * 50 + "ValueError: job already exists"

    def handler(request):
        return httpx.Response(500, text=traceback)

    with pytest.raises(TemporaryError) as caught:
        jobs_answering(handler).info("x")
    assert str(caught.value).endswith("HTTP 500: ValueError: job already exists")


def test_a_refused_submission_is_a_round_error_and_an_unreachable_head_is_temporary():
    with pytest.raises(RoundError, match=r"refused job x: HTTP 400: bad entrypoint"):
        jobs_answering(lambda request: httpx.Response(400, text="bad entrypoint")).submit("x", "python -m t")

    def unreachable(request):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(TemporaryError, match=r"did not answer \(ConnectError\)"):
        jobs_answering(unreachable).info("x")


def test_submission_and_status_round_trip():
    submitted = []

    def handler(request):
        if request.method == "POST":
            submitted.append(json.loads(request.content))
            return httpx.Response(200, json={"job_id": "raysubmit", "submission_id": "x"})
        return httpx.Response(
            200,
            json={
                "submission_id": "x",
                "status": "RUNNING",
                "message": "",
                "start_time": 1_700_000_000_000,
                "end_time": None,
                "metadata": {"taoflow_round": 3},
            },
        )

    jobs = jobs_answering(handler)
    jobs.submit("x", "python -m taoflow.daemon.round.on_ray", metadata={"taoflow_round": "3"})
    info = jobs.info("x")
    assert submitted == [
        {
            "entrypoint": "python -m taoflow.daemon.round.on_ray",
            "submission_id": "x",
            "metadata": {"taoflow_round": "3"},
            "entrypoint_num_cpus": 0.0,
        }
    ]
    assert info is not None and (info.status, info.done, info.start_time) == ("RUNNING", False, 1_700_000_000.0)
    assert info.metadata == {"taoflow_round": "3"}


def test_logs_keep_their_last_mebibyte():
    big = "x" * (3 << 20) + "the end\n"
    jobs = jobs_answering(lambda request: httpx.Response(200, json={"logs": big}))
    text = jobs.logs("x")
    assert len(text) == 1 << 20 and text.endswith("the end\n")

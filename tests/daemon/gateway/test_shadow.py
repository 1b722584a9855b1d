"""The gateway's side of a shadow deploy, with the daemon's real admin API and stand-in replicas (real vLLM serves
tests/e2e/test_shadow.py): mirrors answer only the daemon, never a client, never slow a client down, and stay inside
their budget."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from taoflow.daemon.store.routes import RouteStore, Target
from taoflow.daemon.store.shadows import Mirror, ShadowStore
from tests.daemon.gateway.test_proxy import GATEWAY, chat, count, daemon_admin, gateway
from tests.support.processes import poll_until
from tests.support.replicas import StandInReplica


def shadowing(service, *, max_concurrent: int = 8, max_share: float = 1.0, deploy: int = 1) -> ShadowStore:
    RouteStore(service.state.db).set("support", [Target("v1", 1.0)])
    shadows = ShadowStore(service.state.db)
    shadows.start("support", Mirror("v2", deploy, 1.0, max_concurrent, max_share, 32, 30.0))
    return shadows


def shadow_gateway(tmp_path, replicas, daemon_url: str, *, routes_poll_seconds: float = 0.1):
    """The gateway, reporting to the daemon's admin API with the gateway token."""
    daemon = {"gateway_token": GATEWAY}
    return gateway(tmp_path, replicas, daemon=daemon, daemon_url=daemon_url, routes_poll_seconds=routes_poll_seconds)


def test_mirrored_answers_reach_the_daemon_as_pairs_and_never_a_client(tmp_path):
    with (
        daemon_admin(tmp_path) as (service, daemon_url),
        StandInReplica({"v1", "v2"}) as replica,
        shadow_gateway(tmp_path, [replica], daemon_url) as (app, url),
    ):
        shadows = shadowing(service)
        poll_until(lambda: app.router.shadows, deadline_s=10, message="the gateway reads the shadow")
        answers = [chat(url, "support", stream=i % 2 == 1) for i in range(6)]
        assert all(a.status_code == 200 for a in answers)
        assert all("v2" not in a.text and "v1" in a.text for a in answers)  # only the champion answers clients
        assert chat(url, "v2").status_code == 404  # nor by its version's name
        assert "v2" not in {m["id"] for m in httpx.get(url + "/v1/models").json()["data"]}
        poll_until(lambda: shadows.count(1) == 6, deadline_s=15, message="six pairs at the daemon")
        assert count(app, "taoflow_gateway_shadow_total", {"event": "mirrored"}) == 6
        assert count(app, "taoflow_gateway_shadow_total", {"event": "sent"}) == 6
        pairs = shadows.pairs(1)
    mirrored = [a for a in replica.asked if a["model"] == "v2"]
    assert len(mirrored) == 6 and all(a["stream"] is False and a["max_tokens"] == 32 for a in mirrored)
    for pair in pairs:
        assert pair.champion["request_metadata"]["served_version"] == "v1"
        assert pair.candidate["request_metadata"]["served_version"] == "v2"
        assert pair.champion["request"] == pair.candidate["request"]  # the client's request, as it sent it
        assert pair.champion["response"]["choices"][0]["message"]["content"].startswith("v1 at")  # streams assembled
        assert pair.candidate["response"]["choices"][0]["message"]["content"].startswith("v2 at")


def test_a_slow_candidate_neither_slows_clients_nor_exceeds_its_concurrency(tmp_path):
    with (
        daemon_admin(tmp_path) as (service, daemon_url),
        StandInReplica({"v1"}) as champion,
        StandInReplica({"v2"}, delay_s=2.0) as candidate,
        shadow_gateway(tmp_path, [champion, candidate], daemon_url) as (app, url),
        ThreadPoolExecutor(6) as pool,
    ):
        shadows = shadowing(service, max_concurrent=2)
        poll_until(lambda: app.router.shadows, deadline_s=10, message="the gateway reads the shadow")

        def timed() -> float:
            started = time.monotonic()
            assert chat(url, "support").status_code == 200
            return time.monotonic() - started

        seconds = list(pool.map(lambda _: timed(), range(6)))
        assert max(seconds) < 1.5, seconds  # the candidate takes 2 s; no client waited for it
        assert count(app, "taoflow_gateway_shadow_total", {"event": "mirrored"}) == 2
        assert count(app, "taoflow_gateway_shadow_total", {"event": "skipped_concurrency"}) == 4
        poll_until(lambda: shadows.count(1) == 2, deadline_s=15, message="the two mirrored pairs")


def test_mirrors_stay_within_their_share_of_the_replicas(tmp_path):
    with (
        daemon_admin(tmp_path) as (service, daemon_url),
        StandInReplica({"v1", "v2"}, delay_s=0.5) as replica,
        shadow_gateway(tmp_path, [replica], daemon_url) as (app, url),
        ThreadPoolExecutor(8) as pool,
    ):
        shadowing(service, max_share=0.25)
        poll_until(lambda: app.router.shadows, deadline_s=10, message="the gateway reads the shadow")
        assert all(a.status_code == 200 for a in pool.map(lambda _: chat(url, "support"), range(8)))
        mirrored = count(app, "taoflow_gateway_shadow_total", {"event": "mirrored"})
        skipped = count(app, "taoflow_gateway_shadow_total", {"event": "skipped_share"})
        assert mirrored + skipped == 8 and 1 <= mirrored <= 3, (mirrored, skipped)  # a quarter of what is in flight
        poll_until(
            lambda: count(app, "taoflow_gateway_shadow_max_share") == 0.25, deadline_s=5, message="the budget exported"
        )


def test_pairs_of_a_deploy_that_stopped_shadowing_are_refused_and_dropped(tmp_path):
    with (
        daemon_admin(tmp_path) as (service, daemon_url),
        StandInReplica({"v1", "v2"}) as replica,
        shadow_gateway(tmp_path, [replica], daemon_url, routes_poll_seconds=3600) as (app, url),
    ):
        shadows = shadowing(service)
        app.router.apply(RouteStore(service.state.db).table().as_dict())  # read once; then the shadow ends
        shadows.stop("support", deploy=1)
        assert chat(url, "support").status_code == 200
        poll_until(
            lambda: count(app, "taoflow_gateway_shadow_total", {"event": "refused"}) == 1,
            deadline_s=15,
            message="the late pair refused",
        )
        assert shadows.count(1) == 0

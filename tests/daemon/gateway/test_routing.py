"""Routing decisions: versions by weight, least outstanding replica, fallbacks, and in-flight counts."""

import random
from collections import Counter

from taoflow.daemon.gateway.routing import Choice, Router

TABLE = {"generation": 3, "routes": {"bot": [{"version": "v1", "weight": 0.75}, {"version": "v2", "weight": 0.25}]}}


def router(**served):
    r = Router(rng=random.Random(7))
    r.set_replicas(served)
    for url, names in served.items():
        r.observed(url, names)
    return r


def test_a_routed_name_goes_to_its_versions_by_weight():
    r = router(a=["base", "v1", "v2"], b=["base", "v1", "v2"])
    assert r.apply(TABLE)
    picks = Counter(r.choose("bot").name for _ in range(4000))
    assert set(picks) == {"v1", "v2"} and 0.70 < picks["v1"] / 4000 < 0.80
    assert all(r.choose("bot").routed for _ in range(10))
    assert not r.apply({**TABLE, "generation": 2})  # an older table is ignored
    assert not r.apply({"generation": "x", "routes": {}})


def test_the_least_outstanding_healthy_replica_serving_the_version_is_chosen():
    r = router(a=["v1"], b=["v1"], c=["v2"])
    r.apply({"generation": 1, "routes": {"bot": [{"version": "v1", "weight": 1.0}]}})
    first = r.choose("bot")
    r.begin(first)
    second = r.choose("bot")
    assert {first.url, second.url} == {"a", "b"}
    r.begin(second)
    r.begin(Choice("b", "v1", True))
    assert r.choose("bot").url == "a"
    r.down("a")
    assert r.choose("bot").url == "b"
    # Nobody else is known to serve v1: c, which lists only v2, is asked as a last resort (its view may be stale).
    assert r.choose("bot", exclude=frozenset({("b", "v1")})) == Choice("c", "v1", routed=True)
    assert r.choose("bot", exclude=frozenset({("b", "v1"), ("c", "v1")})) is None


def test_a_version_no_replica_serves_yet_falls_back_to_the_other_versions():
    r = router(a=["v1"], b=["v1"])
    r.apply(
        {"generation": 2, "routes": {"bot": [{"version": "v2", "weight": 0.999}, {"version": "v1", "weight": 0.001}]}}
    )
    assert {r.choose("bot").name for _ in range(50)} == {"v1"}
    r.lost("a", "v1")
    assert r.choose("bot").url == "b"
    r.lost("b", "v1")  # a route newer than every replica's view: asked anyway, by the route's weights
    assert r.choose("bot").routed and r.choose("bot", exclude=frozenset({("a", "v2"), ("b", "v2")})) is None


def test_names_without_a_route_pass_through():
    r = router(a=["base", "v7"], b=["base"])
    assert r.choose("v7") == Choice("a", "v7", routed=False)
    assert r.choose("unknown").url in {"a", "b"}  # a replica answers for itself (its 404 names the model)
    assert r.choose("unknown", exclude=frozenset({("a", "unknown"), ("b", "unknown")})) is None
    assert r.names() == {"base", "v7"}


def test_in_flight_requests_are_counted_per_served_name():
    r = router(a=["v1", "v2"])
    one, two = Choice("a", "v1", True), Choice("a", "v2", True)
    r.begin(one)
    r.begin(one)
    r.begin(two)
    assert r.inflight == {"v1": 2, "v2": 1} and r.replicas["a"].outstanding == 3
    r.end(one)
    r.end(two)
    assert r.inflight == {"v1": 1}


def test_a_name_only_the_client_used_is_never_counted_in_flight():
    r = router(a=["base"])
    unknown = r.choose("x" * 300)  # nobody lists it: a replica answers with its 404, uncounted
    assert unknown is not None and not unknown.counted
    r.begin(unknown)
    assert r.inflight == {} and r.replicas["a"].outstanding == 1
    r.end(unknown)
    assert r.inflight == {} and r.replicas["a"].outstanding == 0
    listed = r.choose("base")
    assert listed is not None and listed.counted


def test_a_scaled_in_replica_finishes_its_requests_and_gets_no_new_ones():
    r = router(a=["v1"], b=["v1"])
    r.begin(Choice("b", "v1", False))
    r.set_replicas(["a"])
    assert "b" in r.replicas and not r.replicas["b"].healthy
    assert all(r.choose("v1").url == "a" for _ in range(10))
    r.end(Choice("b", "v1", False))
    r.set_replicas(["a"])
    assert set(r.replicas) == {"a"}

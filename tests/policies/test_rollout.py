import pytest

from taoflow.policies.rollout import (
    WatchSnapshot,
    WatchThresholds,
    decide_watch,
    plan_repairs,
    plan_rollout,
)


@pytest.mark.parametrize(
    ("replicas", "canary", "batch", "waves"),
    [
        ([], 1, 1, ()),
        (["b", "a"], 1, 1, (("a",), ("b",))),
        (["a", "b", "c", "d", "e"], 1, 2, (("a",), ("b", "c"), ("d", "e"))),
        (["a", "b", "c"], 2, 5, (("a", "b"), ("c",))),
        (["a", "a", "b"], 9, 1, (("a", "b"),)),  # duplicates collapse; canary never exceeds the fleet
    ],
)
def test_plan_rollout_waves(replicas, canary, batch, waves):
    plan = plan_rollout(replicas, canary=canary, batch_size=batch, smoke=True)
    assert plan.waves == waves
    assert plan.smoke and plan.reason


def test_replicas_that_do_not_answer_go_last_and_never_canary():
    plan = plan_rollout(["a", "b", "c"], canary=1, batch_size=1, smoke=True, unreachable={"a"})
    assert plan.waves == (("b",), ("c",), ("a",))
    assert "unreachable now, so last: a" in plan.reason
    everyone_down = plan_rollout(["a", "b"], canary=1, batch_size=1, smoke=True, unreachable={"a", "b"})
    assert everyone_down.waves == (("a",), ("b",))  # nothing answers: the plan is as before, the canary fails it


A, B = "/adapters/v1", "/adapters/v2"


@pytest.mark.parametrize(
    ("observed", "desired", "repairs", "drift"),
    [
        ({"r1": {"m": A}}, {"m": A}, [], {}),
        ({"r1": {}}, {"m": A}, [("r1", None)], {"missing": ["r1 m"]}),
        ({"r1": {"m": B}}, {"m": A}, [("r1", B)], {"stale": ["r1 m"]}),
        ({"r1": None, "r2": {"m": A}}, {"m": A}, [], {"unreachable": ["r1"]}),
        ({"r1": {"m": A, "x": "/y", "v1": A}}, {"m": A}, [], {"unknown": ["r1 x"]}),  # v1 is a known version
        ({"r1": {"m": A}}, {}, [], {"unknown": ["r1 m"]}),  # no champion: the stable name is not ours to serve
    ],
)
def test_plan_repairs(observed, desired, repairs, drift):
    found, kinds = plan_repairs(observed, desired, known_names=frozenset({"v1"}))
    assert [(r.replica, r.served) for r in found] == repairs
    assert {k: v for k, v in kinds.items() if v} == drift
    assert all(r.path == desired[r.name] and r.reason for r in found)


BUCKETS = ((0.5, 0.0), (1.0, 0.0), (5.0, 0.0), (float("inf"), 0.0))


def snap(requests, errors, latencies=(), scores=()):
    counts = [sum(1 for x in latencies if x <= b) for b, _ in BUCKETS]
    return WatchSnapshot(
        requests, errors, tuple((b, float(c)) for (b, _), c in zip(BUCKETS, counts, strict=False)), tuple(scores)
    )


T = WatchThresholds(max_error_rate=0.05, max_p99_latency_s=2.0, max_score_drop=0.1, min_requests=10, min_scores=4)


@pytest.mark.parametrize(
    ("start", "now", "baseline", "rollback", "rule"),
    [
        (snap(100, 0), snap(105, 5), None, False, "too_little_traffic"),  # 5 errors in 5 requests: too few to judge
        (snap(100, 0), snap(200, 10), None, True, "error_rate"),
        (snap(100, 5), snap(200, 9), None, False, "ok"),  # errors before the deploy do not count
        (snap(0, 0), snap(20, 0, [0.2] * 10 + [3.0] * 10), None, True, "latency"),
        (snap(0, 0), snap(20, 0, [0.2] * 20), None, False, "ok"),
        (snap(0, 0), snap(20, 0, [0.2] * 20, [0.5] * 4), 0.9, True, "live_score"),
        (snap(0, 0), snap(20, 0, [0.2] * 20, [0.5] * 3), 0.9, False, "ok"),  # too few scores
        (snap(0, 0), snap(20, 0, [0.2] * 20, [0.85] * 4), 0.9, False, "ok"),  # within max_score_drop
        (snap(0, 0), snap(20, 0, [0.2] * 20, [0.1] * 9), None, False, "ok"),  # no baseline to compare with
    ],
)
def test_decide_watch(start, now, baseline, rollback, rule):
    decision = decide_watch(start, now, baseline_score=baseline, thresholds=T)
    assert (decision.rollback, decision.rule) == (rollback, rule), decision.reason

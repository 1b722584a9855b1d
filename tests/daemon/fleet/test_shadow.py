"""A deploy's shadow step on the daemon's real state and the real arithmetic verifier: it waits for pairs, extends
once, decides with the gate's statistics, and the monitors block a candidate that games its scorer."""

from __future__ import annotations

import pytest

from taoflow.daemon.fleet.shadow import ShadowStep, judge_pairs
from taoflow.daemon.round.parts import build_scorers, monitor_thresholds
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.deploys import DeployStore
from taoflow.daemon.store.routes import RouteStore
from taoflow.daemon.store.shadows import Pair, ShadowStore
from taoflow.daemon.store.state import State
from taoflow.policies.gate import GatePolicy

MODEL = "support-bot"


def row(request_id: str, a: int, answer: str, version: str) -> dict:
    return {
        "databricks_request_id": request_id,
        "timestamp_ms": 1_700_000_000_000,
        "status_code": 200,
        "task": "support",
        "request": {"model": MODEL, "messages": [{"role": "user", "content": f"What is {a} + 30?"}]},
        "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]},
        "request_metadata": {"model_name": MODEL, "served_version": version},
    }


def pairs_of(champion, candidate, n: int, *, start: int = 0) -> list[dict]:
    """Pairs for deploy 1: `champion(a)` and `candidate(a)` answer "What is a + 30?"."""
    return [
        {
            "deploy": 1,
            "request_id": f"r{i}",
            "champion": row(f"r{i}", i, champion(i), "v1"),
            "candidate": row(f"r{i}", i, candidate(i), "v2"),
        }
        for i in range(start, start + n)
    ]


def right(a: int) -> str:
    return f"The answer is {a + 30}."


def wrong(a: int) -> str:
    return f"The answer is {a + 31}."


@pytest.fixture
def step(tmp_path):
    settings = load_settings(
        None,
        storage={"state_dir": str(tmp_path / "state")},
        model={"served_name": MODEL},
        score={"default": [{"type": "arithmetic"}]},
        fleet={"routing": "gateway", "shadow": {"enabled": True, "min_pairs": 12, "max_minutes": 1.0}},
    )
    state = State(settings)
    deploys = DeployStore(state.db)
    record = deploys.start(
        model=MODEL, kind="promote", trigger="test", version="v2", from_version="v1", waves=[["r"]], reason="t"
    )
    yield ShadowStep(settings, deploys, ShadowStore(state.db), build_scorers(settings), None), record, state
    state.close()


def test_the_shadow_waits_for_its_pairs_then_promotes_a_better_candidate(step):
    shadow, record, state = step
    shadows = ShadowStore(state.db)
    record, verdict = shadow.run(record, now=1000.0)
    assert verdict is None and record.detail["shadow"]["deadline"] == 1060.0
    assert RouteStore(state.db).table().shadows[MODEL]["version"] == "v2"  # the gateways are told
    shadows.add("gw", pairs_of(wrong, right, 11), max_pairs=500)
    record, verdict = shadow.run(record, now=1010.0)
    assert verdict is None and record.detail["shadow"]["pairs"] == 11
    shadows.add("gw", pairs_of(wrong, right, 1, start=11), max_pairs=500)
    record, verdict = shadow.run(record, now=1020.0)
    assert verdict is not None and verdict.passed, verdict.reason
    figures = record.detail["shadow"]["verdict"]
    assert figures["pairs"] == 12 and figures["candidate_mean"] == 1.0 and figures["champion_mean"] == 0.0
    assert MODEL not in RouteStore(state.db).table().shadows  # mirroring stopped once decided


def test_a_worse_candidate_is_rejected(step):
    shadow, record, state = step
    shadow.run(record, now=1000.0)
    ShadowStore(state.db).add("gw", pairs_of(right, wrong, 12), max_pairs=500)
    _, verdict = shadow.run(record, now=1001.0)
    assert verdict is not None and not verdict.passed and verdict.decision.outcome != "too_few_samples"


def test_too_few_pairs_extend_the_shadow_once_then_reject_it_for_too_few(step):
    shadow, record, state = step
    record, _ = shadow.run(record, now=1000.0)
    ShadowStore(state.db).add("gw", pairs_of(wrong, right, 3), max_pairs=500)
    record, verdict = shadow.run(record, now=1061.0)
    assert verdict is None and record.detail["shadow"]["extended"] and record.detail["shadow"]["deadline"] == 1121.0
    record, verdict = shadow.run(record, now=1100.0)
    assert verdict is None
    record, verdict = shadow.run(record, now=1122.0)
    assert verdict is not None and verdict.decision.outcome == "too_few_samples"


def test_longer_answers_of_the_same_correctness_are_blocked_by_the_monitors(step):
    shadow, record, state = step
    shadow.run(record, now=1000.0)
    wordy = lambda a: right(a) + " I worked it out step by step, carefully, and I am confident of it."  # noqa: E731
    ShadowStore(state.db).add("gw", pairs_of(wrong, wordy, 12), max_pairs=500)
    _, verdict = shadow.run(record, now=1001.0)
    assert verdict is not None and verdict.decision.passed and not verdict.passed  # better, but blocked
    assert verdict.reason.startswith("monitors: answer_length")


class FirstWins:
    """A judge that prefers whichever answer it reads first: the fault a real judge shows only sometimes."""

    def for_task(self, task):
        return self

    def score(self, record, answers):
        return [1.0] + [0.0] * (len(answers) - 1)


def test_both_orders_cancel_a_judges_position_bias_and_the_monitor_names_it(step):
    shadow, _, _ = step
    pairs = [Pair(p["request_id"], "gw", p["champion"], p["candidate"]) for p in pairs_of(right, wrong, 12)]
    policy = GatePolicy(min_samples=12, confidence=0.9)
    verdict = judge_pairs(pairs, FirstWins(), policy, monitor_thresholds(shadow.settings))
    assert verdict.decision.candidate_mean == verdict.decision.champion_mean == 0.5  # neither side gains from it
    assert verdict.monitors.position_bias == 1.0 and verdict.reason.startswith("monitors: position_bias")

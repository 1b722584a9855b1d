import pytest

from taoflow.policies.gate import GatePolicy, SliceScores, decide_gate

POLICY = GatePolicy(min_mean_improvement=0.02, max_slice_regression=0.05, min_samples=16, min_slice_samples=4)


def s(task: str, n: int, cand: float, champ: float) -> SliceScores:
    return SliceScores(task=task, n=n, candidate_mean=cand, champion_mean=champ)


@pytest.mark.parametrize(
    ("slices", "golden", "passed", "outcome"),
    [
        ([s("a", 20, 0.5, 0.2)], [], True, "passed"),
        ([s("a", 10, 0.5, 0.2)], [], False, "too_few_samples"),
        ([s("a", 10, 0.9, 0.2), s("b", 10, 0.3, 0.4)], [], False, "slice_regression"),
        ([s("a", 10, 0.9, 0.2), s("b", 10, 0.36, 0.4)], [], True, "passed"),  # 0.04 drop is allowed
        ([s("a", 20, 0.21, 0.2)], [], False, "insufficient_improvement"),
        ([s("a", 20, 0.2, 0.2)], [], False, "insufficient_improvement"),
        # A tiny slice is too noisy to judge for regression but still counts in the mean.
        ([s("a", 20, 0.9, 0.2), s("b", 2, 0.0, 1.0)], [], True, "passed"),
        ([s("a", 20, 0.9, 0.2)], [s("gold", 8, 0.5, 0.8)], False, "slice_regression"),
        ([s("a", 20, 0.9, 0.2)], [s("gold", 8, 0.8, 0.8)], True, "passed"),
        ([], [], False, "too_few_samples"),
    ],
)
def test_decide_gate_table(slices, golden, passed, outcome):
    decision = decide_gate(slices, POLICY, golden=golden)
    assert decision.passed is passed
    assert decision.outcome == outcome
    assert decision.reason


def test_mean_is_weighted_by_slice_size_and_reason_has_numbers():
    decision = decide_gate([s("a", 30, 1.0, 0.0), s("b", 10, 0.0, 0.0)], POLICY)
    assert decision.candidate_mean == pytest.approx(0.75)
    assert decision.champion_mean == 0.0
    assert "0.000 -> 0.750" in decision.reason


def test_regression_reason_names_the_task():
    decision = decide_gate([s("math", 10, 0.1, 0.6), s("json", 10, 0.9, 0.1)], POLICY)
    assert "math" in decision.reason and "0.600 -> 0.100" in decision.reason

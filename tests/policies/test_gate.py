import pytest

from taoflow.policies.gate import GatePolicy, SliceScores, decide_gate, measure_noise, min_prompts_for

# The means alone (confidence 0): the rules before the noise check.
POLICY = GatePolicy(
    min_mean_improvement=0.02, max_slice_regression=0.05, min_samples=16, min_slice_samples=4, confidence=0.0
)
NOISY = GatePolicy(min_mean_improvement=0.0, min_samples=16, confidence=0.9)


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


def paired(task: str, candidate: list[float], champion: list[float]) -> SliceScores:
    n = len(candidate)
    return SliceScores(
        task,
        n,
        sum(candidate) / n,
        sum(champion) / n,
        deltas=tuple(a - b for a, b in zip(candidate, champion, strict=True)),
    )


def test_one_prompts_worth_of_change_is_noise():
    # The case: +0.021 over 24 held-out prompts, one prompt's answer improving by half a point.
    champion = [0.5] * 12 + [0.0] * 12
    candidate = [1.0, *champion[1:]]
    decision = decide_gate([paired("t", candidate, champion)], NOISY)
    assert decision.mean_improvement == pytest.approx(0.5 / 24)
    assert (decision.passed, decision.outcome) == (False, "within_noise")
    assert decision.noise is not None and decision.noise.lower == 0.0
    assert (decision.noise.improved, decision.noise.worsened) == (1, 0)
    assert decision.noise.p_value == 0.5
    assert "1 prompts changed (1 up, 0 down, sign test p=0.500)" in decision.reason


def test_an_identical_adapter_is_rejected_and_a_real_improvement_passes():
    base = [0.0] * 24
    same = decide_gate([paired("t", base, base)], NOISY)
    assert (same.passed, same.outcome) == (False, "within_noise")
    better = [1.0] * 8 + [0.0] * 16  # 8 of 24 prompts fixed, none broken
    decision = decide_gate([paired("t", better, base)], NOISY)
    assert decision.passed and decision.outcome == "passed"
    assert decision.noise is not None and 0.0 < decision.noise.lower < 1 / 3 < decision.noise.upper
    assert decision.noise.p_value == pytest.approx(0.5**8)
    assert "90% bounds" in decision.reason


def test_mixed_changes_need_more_ups_than_downs():
    champion = [0.5] * 30
    # 6 up by 0.5, 4 down by 0.5: mean +0.033 but the sign test (p=0.377) and the bound say noise.
    candidate = [1.0] * 6 + [0.0] * 4 + [0.5] * 20
    decision = decide_gate([paired("t", candidate, champion)], NOISY)
    assert decision.mean_improvement > 0 and decision.outcome == "within_noise"
    assert decision.noise is not None and decision.noise.lower < 0 < decision.noise.upper


def test_non_inferiority_bar_skips_the_sign_test():
    # A negative minimum asks "not worse by more than 0.1": bounded below, the sign of changes does not matter.
    policy = GatePolicy(min_mean_improvement=-0.1, min_samples=16, confidence=0.9)
    champion = [0.5] * 20
    candidate = [0.55] * 10 + [0.45] * 10
    assert decide_gate([paired("t", candidate, champion)], policy).passed


def test_too_few_prompts_for_the_asked_confidence_is_its_own_rejection():
    assert [min_prompts_for(c) for c in (0.0, 0.5, 0.9, 0.95, 0.99)] == [1, 1, 4, 5, 7]
    policy = GatePolicy(min_samples=1, min_slice_samples=1, confidence=0.99)
    decision = decide_gate([paired("t", [1.0] * 6, [0.0] * 6)], policy)
    assert (decision.passed, decision.outcome) == (False, "too_few_for_confidence")
    assert "needs at least 7" in decision.reason
    # "Not worse by more than 0.5" asks no sign test: a few prompts can show it.
    lenient = GatePolicy(min_mean_improvement=-0.5, min_samples=1, min_slice_samples=1, confidence=0.99)
    assert decide_gate([paired("t", [0.5, 0.5, 1.0], [0.5, 0.5, 0.5])], lenient).passed


def test_the_noise_check_is_deterministic_and_needs_paired_deltas():
    deltas = [0.3, -0.1, 0.0, 0.2, 0.5, -0.2, 0.1, 0.0] * 3
    a = measure_noise(deltas, confidence=0.9, samples=500, seed=1)
    assert a == measure_noise(deltas, confidence=0.9, samples=500, seed=1)
    assert a.lower < sum(deltas) / len(deltas) < a.upper
    with pytest.raises(ValueError, match="paired delta"):
        decide_gate([s("a", 20, 0.9, 0.1)], NOISY)


def test_too_few_samples_says_when_answers_went_unscored_and_what_scores_the_gate():
    unscored = SliceScores(task="facts", n=0, candidate_mean=0.0, champion_mean=0.0, left_out=32)
    decision = decide_gate([unscored], GatePolicy())
    assert decision.outcome == "too_few_samples" and "32 left out" in decision.reason
    assert "set gate.scorers" in decision.reason
    plain = decide_gate([SliceScores(task="facts", n=3, candidate_mean=1.0, champion_mean=0.0)], GatePolicy())
    assert "left out" not in plain.reason

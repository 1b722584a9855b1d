from __future__ import annotations

import pytest

from taoflow.policies.monitors import MonitorThresholds, check_gaming, is_refusal

SHORT = ["The answer is 42."] * 10
LONG = ["The answer is 42. " + "Let me explain at length why this is so. " * 3] * 10
REFUSING = ["I'm sorry, but I can't help with that."] * 4 + SHORT[:6]
T = MonitorThresholds()


@pytest.mark.parametrize(
    ("text", "declines"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I cannot answer this question.", True),
        ("As an AI language model, I don't do sums.", True),
        ("I refuse to do arithmetic.", True),
        ("I won't do that.", True),
        ("The answer is 42.", False),
        ("Sorry state of affairs: 42.", False),
        ("x" * 300 + " I cannot", False),  # a refusal comes first; the window bounds the search
    ],
)
def test_refusals_are_recognised_near_the_answers_start(text, declines):
    assert is_refusal(text) is declines


@pytest.mark.parametrize(
    ("candidate", "champion", "kwargs", "names"),
    [
        (SHORT, SHORT, {}, []),
        (LONG, SHORT, {}, ["answer_length"]),
        (SHORT, LONG, {}, []),  # shorter is never blocked
        (REFUSING, SHORT, {}, ["refusals"]),
        (SHORT, REFUSING, {}, []),
        (LONG[:5], SHORT[:5], {}, []),  # too few answers to judge length
        (SHORT, SHORT, {"training_improvement": 0.3, "independent_improvement": 0.0}, ["scorer_divergence"]),
        (SHORT, SHORT, {"training_improvement": 0.3, "independent_improvement": -0.1}, ["scorer_divergence"]),
        (SHORT, SHORT, {"training_improvement": 0.3, "independent_improvement": 0.25}, []),  # both rose
        (SHORT, SHORT, {"training_improvement": 0.05, "independent_improvement": 0.0}, []),  # within the margin
        (SHORT, SHORT, {"position_bias": 0.5}, ["position_bias"]),
        (SHORT, SHORT, {"position_bias": -0.5}, ["position_bias"]),
        (SHORT, SHORT, {"position_bias": 0.1}, []),
        (LONG, SHORT, {"position_bias": 0.5}, ["answer_length", "position_bias"]),
    ],
)
def test_each_monitor_blocks_with_its_name(candidate, champion, kwargs, names):
    report = check_gaming(candidate, champion, T, **kwargs)
    assert [b.split(":")[0] for b in report.blocked] == names
    assert report.passed is (not names)
    if names:
        assert names[0] in report.reason


def test_the_report_carries_what_each_monitor_read():
    report = check_gaming(LONG, SHORT, T, training_improvement=0.2, independent_improvement=0.1)
    assert report.answers == 10
    assert report.length_ratio == pytest.approx(len(LONG[0]) / len(SHORT[0]))
    assert report.refusal_rate == 0.0 and report.champion_refusal_rate == 0.0
    assert report.scorer_divergence == pytest.approx(0.1)
    assert report.position_bias is None


def test_an_empty_champion_answer_does_not_divide_by_zero():
    report = check_gaming(SHORT, [""] * 10, T)
    assert report.length_ratio is None and report.passed

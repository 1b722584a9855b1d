import pytest

from taoflow.policies.selection import (
    ScoredCandidate,
    group_mean,
    select_distill_targets,
    select_preference_pair,
    select_relative_targets,
)


def c(text: str, score: float | None, tokens: int = 5, finished: bool = True) -> ScoredCandidate:
    return ScoredCandidate(text, score, tokens, finished)


def test_best_first_and_shorter_wins_ties():
    cands = [c("long right answer", 1.0, 12), c("short right", 1.0, 3), c("wrong", 0.0, 2)]
    assert [t.text for t in select_distill_targets(cands, threshold=0.99, per_prompt=2)] == [
        "short right",
        "long right answer",
    ]


@pytest.mark.parametrize(
    ("cands", "expected"),
    [
        ([c("a", 0.5)], []),  # below threshold
        ([c("a", None)], []),  # unscored never imitated
        ([c("a", 1.0, finished=False)], []),  # cut off never imitated
        ([c("a", 1.0), c(" a ", 1.0), c("b", 1.0)], ["a", "b"]),  # white-space duplicates fold
        ([c("", 1.0)], []),
    ],
)
def test_distill_filters(cands, expected):
    assert [t.text.strip() for t in select_distill_targets(cands, threshold=0.9, per_prompt=3)] == expected


def test_preference_pair_needs_margin_and_threshold():
    cands = [c("good", 1.0), c("meh", 0.6), c("bad", 0.0, 40, finished=False)]
    best, worst = select_preference_pair(cands, margin=0.5, threshold=0.9)
    assert (best.text, worst.text) == ("good", "bad")
    assert select_preference_pair(cands[:2], margin=0.5) is None
    assert select_preference_pair([c("x", 0.7), c("y", 0.0)], margin=0.5, threshold=0.9) is None
    assert select_preference_pair([c("x", None)], margin=0.0) is None


@pytest.mark.parametrize(
    ("cands", "margin", "floor", "expected"),
    [
        # A judge's continuous scores: the correct-but-wordy answer at 0.5 beats a group of 0.0s.
        ([c("wordy right", 0.5), c("wrong", 0.0), c("also wrong", 0.0)], 0.1, 0.0, ["wordy right"]),
        # Every candidate alike: nothing beats the mean, however high the level.
        ([c("a", 1.0), c("b", 1.0)], 0.0, 0.0, []),
        ([c("a", 0.5), c("b", 0.5)], 0.1, 0.0, []),
        # Above the mean, but not by the margin.
        ([c("a", 0.62), c("b", 0.6), c("c", 0.58)], 0.1, 0.0, []),
        # The absolute floor still applies.
        ([c("a", 0.3), c("b", 0.0), c("c", 0.0)], 0.1, 0.5, []),
        # Unscored candidates do not drag the mean; cut-off answers are never imitated.
        ([c("a", 0.9, finished=False), c("b", 0.8), c("c", 0.1), c("d", None)], 0.1, 0.0, ["b"]),
        ([c("a", None)], 0.0, 0.0, []),
    ],
)
def test_relative_targets(cands, margin, floor, expected):
    chosen = select_relative_targets(cands, margin=margin, floor=floor, per_prompt=2)
    assert [t.text for t in chosen] == expected


def test_relative_targets_best_first_and_per_prompt():
    cands = [c("ok", 0.7), c("best", 0.9), c("bad", 0.0), c("worst", 0.0)]
    assert [t.text for t in select_relative_targets(cands, margin=0.1, per_prompt=1)] == ["best"]
    assert [t.text for t in select_relative_targets(cands, margin=0.1, per_prompt=3)] == ["best", "ok"]
    assert group_mean(cands) == pytest.approx(0.4)
    assert group_mean([c("x", None)]) is None


def test_the_shape_of_a_tasks_scores():
    from taoflow.policies.selection import score_shape

    binary = score_shape([[0.0, 1.0], [0.0, 0.0]])
    assert (binary.kind, binary.levels, binary.flat, binary.saturated) == ("binary", (0.0, 1.0), 1, False)
    graded = score_shape([[0.0, 0.5, 1.0], [0.5, None]])
    assert (graded.kind, graded.levels, graded.flat) == ("graded", (0.0, 0.5, 1.0), 1)  # one scored: alike
    continuous = score_shape([[i / 10 for i in range(10)]])
    assert (continuous.kind, continuous.levels) == ("continuous", ())
    judge = score_shape([[1.0] * 6] * 9 + [[0.9] + [1.0] * 5])  # a judge that gives 10/10 to almost everything
    assert judge.saturated and judge.flat == 9
    assert score_shape([[None, None]]).kind == "none"

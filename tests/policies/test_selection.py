import pytest

from taoflow.policies.selection import ScoredCandidate, select_distill_targets, select_preference_pair


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

"""A round that learns from little says why, from its own figures, and what would change it: graded scores under a
0/1 threshold (the figure of the other selection beside it), and scorers that cannot tell a model's answers apart."""

from pathlib import Path

from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.cli.report import round_table
from taoflow.daemon.round import candidates as cand
from taoflow.daemon.round.stages import nothing_to_learn, score_summary, training_examples
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.rounds import RoundRecord
from taoflow.daemon.store.summaries import RoundSummary
from taoflow.policies.selection import ScoredCandidate


def prompts(task: str, groups: list[list[float]]):
    return [
        (
            PromptRecord(f"{task}-{i}", task, (Message("user", f"q{i}"),)),
            [ScoredCandidate(f"answer {i}.{j}", v, 3 + j) for j, v in enumerate(group)],
        )
        for i, group in enumerate(groups)
    ]


# A user's graded verifier (1.0 for the exact short answer, 0.5 for the right answer in a wordy one): most prompts'
# best candidate is the wordy one.
GRADED = [[0.5, 0.0, 0.0, 0.5]] * 40 + [[1.0, 0.5, 0.0, 0.0]] * 3
# A judge that gives 10/10 to nearly every answer.
SATURATED = [[1.0] * 4] * 20 + [[0.9, 1.0, 1.0, 1.0]]


def test_the_default_selection_learns_from_graded_scores_and_says_why():
    scored = prompts("extract", GRADED) + prompts("math", [[1.0, 0.0, 0.0, 1.0]] * 10)
    summary = score_summary(scored, load_settings(None), None)  # train.selection: auto
    extract, math = summary.tasks["extract"], summary.tasks["math"]
    assert (extract.selection, extract.prompts_with_target, extract.other_selection_keeps) == ("relative", 43, 3)
    assert extract.selection_reason == (
        "scores are graded (0, 0.5, 1) and seldom reach the threshold: a candidate at 0.99 in 3 of 43 prompts, "
        "relative keeps 43"
    )
    assert (math.selection, math.selection_reason) == ("threshold", "scores are 0/1")
    assert summary.examples == len(training_examples(scored, load_settings(None))) >= 43 + 10
    assert summary.advice == []


def test_graded_scores_under_a_threshold_say_what_relative_selection_would_keep():
    settings = load_settings(None, train={"selection": "threshold"})
    summary = score_summary(prompts("extract", GRADED), settings, None)
    task = summary.tasks["extract"]
    assert (task.prompts_with_target, task.other_selection_keeps) == (3, 43)
    assert (task.score_kind, task.score_levels) == ("graded", [0.0, 0.5, 1.0])
    (advice,) = summary.advice
    assert "3 of 43 prompts had a candidate scoring at least 0.99" in advice
    assert "graded (0, 0.5, 1): train.selection: relative would learn from 43" in advice


def test_a_saturated_scorer_is_named_with_what_helps():
    settings = load_settings(None, train={"selection": "relative"})
    scored = prompts("trivia", SATURATED)
    summary = score_summary(scored, settings, None)
    (advice,) = summary.advice
    assert advice.startswith("trivia: the candidates of 20 of 21 prompts all scored alike") and "rubric" in advice
    assert "all scored alike" in nothing_to_learn(scored, settings, erased=0)


def test_a_round_that_learns_plenty_gives_no_advice_and_the_table_shows_advice_when_there_is():
    settings = load_settings(None, train={"selection": "threshold"})
    assert score_summary(prompts("math", [[1.0, 0.0]] * 10), settings, None).advice == []
    summary = score_summary(prompts("extract", GRADED), settings, None)
    record = RoundRecord(
        id=7,
        model="m",
        step="done",
        status="done",
        reason="",
        work_dir=Path("."),
        version=None,
        started_at=0.0,
        updated_at=0.0,
        summary=RoundSummary(score=summary),
    )
    table = round_table(record)
    assert "what the round learnt from, and what would change it:" in table and "relative would learn" in table


def test_grpo_has_no_other_selection_to_compare():
    settings = load_settings(None, train={"objective": "grpo"})
    statistics = cand.score_statistics(prompts("extract", GRADED), cand.selection_of(settings))
    assert "other_selection_keeps" not in statistics["extract"]  # GRPO learns from spread, not a selection

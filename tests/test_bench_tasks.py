"""The benchmarks' judged task: its hidden checker credits the right place named alone, and nothing else."""

from __future__ import annotations

import random

import pytest

from bench.lib.capitals import CAPITALS
from bench.lib.tasks import Capitals, capital_named, record

TASK = Capitals()


def asked(country: str, direction: str):  # type: ignore[no-untyped-def]
    return record(TASK, 0, (country, direction))


@pytest.mark.parametrize(
    ("country", "direction", "answer", "score"),
    [
        ("France", "capital", "Paris", 1.0),
        ("France", "capital", "The capital of France is Paris.", 1.0),
        ("France", "capital", "paris", 1.0),
        ("France", "capital", "Lyon", 0.0),
        ("France", "capital", "Paris or Rome", 0.0),  # several capitals: no credit
        ("France", "capital", "", 0.0),
        ("France", "capital", "Parisian", 0.0),  # a whole name, not a part of a word
        ("Peru", "country", "Peru", 1.0),
        ("Peru", "country", "Lima is the capital of Peru.", 1.0),  # the question's own capital is no other country
        ("Sudan", "country", "South Sudan", 0.0),  # the longer name is the place named
        ("South Sudan", "country", "South Sudan", 1.0),
        ("Papua New Guinea", "country", "Papua New Guinea", 1.0),  # Guinea is part of the name, not a second place
        ("Mexico", "capital", "Mexico City, Mexico", 1.0),
        ("United States", "capital", "Washington, D.C.", 1.0),
        ("United Kingdom", "country", "The UK", 1.0),
        ("Colombia", "capital", "Bogotá", 1.0),  # accents dropped
        ("Ukraine", "capital", "Kiev", 1.0),
    ],
)
def test_the_checker_credits_the_right_place_alone(country, direction, answer, score):
    assert capital_named(asked(country, direction), answer) == score


def test_every_problem_has_its_right_answer_credited_and_a_wrong_one_not():
    rng = random.Random(0)
    problems = TASK.problems(random.Random(11))
    assert len(problems) == 2 * len(CAPITALS) == len(set(problems))
    for i, problem in enumerate(problems):
        r = record(TASK, i, problem)
        assert capital_named(r, TASK.right(problem)) == 1.0, problem
        assert capital_named(r, TASK.wrong(problem, rng)) == 0.0, problem


def test_both_questions_of_a_country_fall_in_one_split():
    problems = TASK.problems(random.Random(11))
    assert all(problems[i][0] == problems[i + 1][0] for i in range(0, len(problems), 2))
    assert all(at % 2 == 0 for at in TASK.layout)


def test_a_question_of_another_task_is_an_error_not_a_score():
    with pytest.raises(ValueError, match="not a capitals question"):
        capital_named(record(TASK, 0, ("Atlantis", "capital")), "Poseidonis")

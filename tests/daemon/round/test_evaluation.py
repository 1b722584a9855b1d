import json

import pytest

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.round.evaluation import Evaluation, _golden_score, load_golden, rescore, slices
from taoflow.daemon.round.parts import build_gate_scorers, build_scorers
from taoflow.daemon.settings import load_settings


def test_golden_file_in_any_record_shape(tmp_path):
    path = tmp_path / "golden.jsonl"
    rows = [
        {"task": "math", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "expected": 4},
        {"task": "greet", "request": {"messages": [{"role": "user", "content": "Say hi"}]}, "expected": "Hi!"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    math, greet = load_golden(path)
    assert (math.task, math.metadata["expected"]) == ("math", 4)
    assert greet.task == "greet"
    assert _golden_score(math, "2 + 2 = 4") == 1.0
    assert _golden_score(math, "5") == 0.0
    assert _golden_score(greet, "  hi! ") == 1.0
    assert _golden_score(greet, "hello") == 0.0


def test_bad_golden_lines_name_the_line(tmp_path):
    path = tmp_path / "golden.jsonl"
    path.write_text('{"task": "t", "messages": [{"role": "user", "content": "q"}]}\n{oops\n')
    with pytest.raises(ConfigurationError, match=r"golden\.jsonl:2"):
        load_golden(path)
    with pytest.raises(ConfigurationError, match="cannot read golden set"):
        load_golden(tmp_path / "missing.jsonl")


def test_the_gate_rescores_the_same_answers_with_its_own_scorers():
    settings = load_settings(
        None,
        score={"sandbox": {"enabled": False}, "tasks": {"math": [{"type": "length", "params": {"max_chars": 4}}]}},
        gate={"scorers": {"math": [{"type": "arithmetic"}]}},
    )
    assert build_gate_scorers(load_settings(None)) is None
    records = [PromptRecord(f"r{i}", "math", (Message("user", f"What is {i} + 1?"),)) for i in range(3)]
    answers = ["1", "the answer is 2", "4"]
    by_training = rescore(Evaluation({}, answers), records, build_scorers(settings))
    by_gate = rescore(Evaluation({}, answers), records, build_gate_scorers(settings))
    assert by_gate.scores == {"math": [1.0, 1.0, 0.0]}  # right, right, wrong
    assert by_training.scores["math"][1] < 1.0  # the long right answer loses on length
    (math,) = slices(by_gate, by_training)
    assert (math.n, math.changed) == (3, 2) and math.deltas[0] == 0.0


def test_a_prompt_either_side_could_not_score_is_left_out_of_the_comparison_and_counted():
    """Finding: an unscored answer counted as 0.0, so a gate whose scorer failed on one side judged on zeros."""
    candidate = Evaluation(scores={"t": [1.0, None, 0.0, 1.0]})
    champion = Evaluation(scores={"t": [0.0, 1.0, None, 1.0]})
    (paired,) = slices(candidate, champion)
    assert (paired.n, paired.left_out, paired.deltas) == (2, 2, (1.0, 0.0))
    assert (paired.candidate_mean, paired.champion_mean) == (1.0, 0.5)
    assert candidate.mean("t") == pytest.approx(2 / 3)  # its scored answers only
    round_trip = Evaluation.from_json(json.loads(json.dumps(candidate.to_json())))
    assert round_trip.scores == {"t": [1.0, None, 0.0, 1.0]}

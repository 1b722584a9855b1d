"""The agreement statistics of `taoflow scorers check`, and the command on a round's candidates and on a golden set."""

import json

import pytest
import yaml

from taoflow.connectors.protocols import Completion
from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.cli import main
from taoflow.daemon.cli.report import scorer_check_table
from taoflow.daemon.round.agreement import calibrate, pairwise_accuracy, report, spearman
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.round_files import RoundPrompts
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.state import State


@pytest.mark.parametrize(
    ("xs", "ys", "expected"),
    [
        ([1, 2, 3, 4], [10, 20, 30, 40], 1.0),
        ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
        ([1, 1, 2, 2], [1, 1, 2, 2], 1.0),  # ties take their mean rank
        ([1, 2, 3], [5, 5, 5], None),  # a constant side has no ranking
        ([1, 2], [1, 2], None),  # too short to say
    ],
)
def test_spearman(xs, ys, expected):
    rho = spearman(xs, ys)
    assert rho == (pytest.approx(expected) if expected is not None else None)


def test_pairwise_accuracy_counts_only_pairs_the_reference_tells_apart():
    reference = [[1.0, 0.0, 0.0], [0.5, 0.5]]
    # Pairs the reference orders: (0,1), (0,2) of the first prompt. The scorer gets one right and ties the other.
    accuracy, pairs = pairwise_accuracy([[0.9, 0.1, 0.9], [0.0, 1.0]], reference)
    assert (accuracy, pairs) == (pytest.approx(0.75), 2)
    assert pairwise_accuracy([[None, 0.1, 0.2]], [[1.0, 0.0, 0.5]]) == (1.0, 1)  # (1, 2) only: both say 1 < 2
    assert pairwise_accuracy([[None, 0.3, 0.2]], [[1.0, 0.0, 0.5]]) == (0.0, 1)
    assert pairwise_accuracy([[0.3]], [[1.0]]) == (None, 0)


def test_report_shows_a_length_bias():
    scores = [[0.2, 0.5, 0.9], [0.1, 0.6, 0.95]]
    lengths = [[10, 50, 200], [5, 60, 300]]
    r = report("t", "judge", scores, lengths=lengths, reference=[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert r.length_correlation == pytest.approx(1.0)
    assert r.pairwise_accuracy == 0.0 and r.pairs == 4
    assert r.rank_correlation is not None and r.rank_correlation < 0
    assert (r.scored, r.unscored) == (6, 0)


def test_a_scorer_that_scores_nearly_every_group_alike_is_saturated_without_a_reference():
    judge = [[1.0, 1.0, 1.0, 1.0]] * 20 + [[0.9, 1.0, 1.0, 1.0]]  # 10/10 for nearly every answer
    r = report("trivia", "judge", judge, lengths=[[5] * 4] * 21)
    assert r.saturated and (r.flat_prompts, r.prompts) == (20, 21) and r.rank_correlation is None
    assert not report("t", "verifier", [[1.0, 0.0]] * 5, lengths=[[5, 5]] * 5).saturated
    table = scorer_check_table("round 1", 21, [r])
    assert "20/21 SATURATED" in table


def question(i: int) -> PromptRecord:
    return PromptRecord(f"r{i}", "math", (Message("user", f"What is {i} + {i}?"),))


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "taoflow.yaml"
    scorers = [{"type": "arithmetic"}, {"type": "length", "params": {"max_chars": 12}}]
    path.write_text(
        yaml.safe_dump({"storage": {"state_dir": str(tmp_path / "state")}, "score": {"tasks": {"math": scorers}}})
    )
    return path


def test_scorers_check_on_a_rounds_candidates_takes_the_verifier_as_reference(config, capsys):
    state = State(load_settings(config))
    records = [question(i) for i in range(4)]
    state.buffer.add_many([(r, None) for r in records], source="test")
    stored = state.buffer.training_prompts(10)
    rounds = RoundStore(state.db, state.rounds_dir)
    record = rounds.start("taoflow")
    record.files.write_prompts(RoundPrompts(ids=[p.id for p in stored], champion=None))
    answers = [[f"{2 * i}", f"{i} + {i} is {2 * i}, as anyone can check.", "no idea"] for i in range(len(stored))]
    record.files.write_candidates(
        [p.record for p in stored], [[Completion(a, 5, True) for a in row] for row in answers]
    )
    state.close()
    assert main(["scorers", "check", "--config", str(config), "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "round 1"
    rows = {r["scorer"]: r for r in out["scorers"]}
    assert set(rows) == {"arithmetic", "length", "composite"}
    assert rows["arithmetic"]["pairwise_accuracy"] is None  # it is the reference
    # length agrees with correctness on (right short vs wrong), disagrees on (right long vs wrong): ties count half.
    assert rows["length"]["pairs"] == 8 and rows["length"]["length_correlation"] < 0
    # The composite ties the long right answer (1 + 0) with "no idea" (0 + 1): half of those pairs.
    assert rows["composite"]["pairwise_accuracy"] == 0.75
    assert main(["scorers", "check", "--config", str(config)]) == 0
    assert "pairs agreed" in capsys.readouterr().out


def test_scorers_check_on_a_golden_set(config, tmp_path, capsys):
    golden = tmp_path / "golden.jsonl"
    rows = [
        {
            "task": "math",
            "messages": [{"role": "user", "content": f"What is {i} + 1?"}],
            "candidates": [{"text": f"{i + 1}", "label": 1.0}, {"text": f"{i + 2}", "label": 0.0}],
        }
        for i in range(5)
    ]
    golden.write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["scorers", "check", "--config", str(config), "--golden", str(golden), "-o", "json"]) == 0
    out = {r["scorer"]: r for r in json.loads(capsys.readouterr().out)["scorers"]}
    assert out["arithmetic"]["pairwise_accuracy"] == 1.0 and out["arithmetic"]["pairs"] == 5
    assert out["length"]["pairwise_accuracy"] == 0.5  # both answers short: a tie on every pair
    assert out["arithmetic"]["calibration"] == {"threshold": 1.0, "balanced_accuracy": 1.0, "good": 5, "bad": 5}
    assert "golden labels" in out
    golden.write_text('{"task": "math", "messages": [{"role": "user", "content": "q"}]}\n')
    assert main(["scorers", "check", "--config", str(config), "--golden", str(golden)]) == 2
    assert "rows need messages and candidates" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("scores", "reference", "threshold", "accuracy"),
    [
        # A judge whose 7s and up are the good answers: calibrated at 0.7, agreeing every time.
        ([[0.9, 0.7, 0.3], [0.8, 0.2, 0.1]], [[1, 1, 0], [1, 0, 0]], 0.7, 1.0),
        # A saturated judge (10/10 for all): one threshold, no better than chance.
        ([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], [[1, 0, 0], [1, 0, 1]], 1.0, 0.5),
        # Inverted: the best split still is chance (all pass), never a threshold that flips its meaning.
        ([[0.1, 0.9], [0.2, 0.8]], [[1, 0], [1, 0]], 0.1, 0.5),
        # One good answer scored low: letting it through lets a bad one through too; on the tie, the stricter bar.
        ([[0.9, 0.4, 0.5], [0.95, 0.1, 0.2]], [[1, 1, 0], [1, 0, 0]], 0.9, 5 / 6),
    ],
)
def test_a_judge_is_calibrated_on_golden_labels(scores, reference, threshold, accuracy):
    calibration = calibrate(scores, reference)
    assert calibration is not None
    assert calibration.threshold == threshold and calibration.balanced_accuracy == pytest.approx(accuracy)


def test_no_calibration_without_good_and_bad_answers_both():
    assert calibrate([[0.9, 0.1]], [[1, 1]]) is None
    assert calibrate([[None, 0.1]], [[1, 0]]) is None

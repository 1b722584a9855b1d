import json

import pytest

from taoflow.connectors.errors import ConfigurationError
from taoflow.daemon.round.evaluation import _golden_score, load_golden


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

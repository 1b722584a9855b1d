"""The LLM judge against a real vLLM CPU server serving the real small model: structured verdicts, both modes,
the cache. (A 135M judge is weak: these tests check that its verdicts are obtained, parsed and counted, not
that they are wise. Fault shapes: tests/connectors/scoring/test_judge.py.)"""

from __future__ import annotations

import pytest

from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.scoring.judge import JudgeScorer

pytestmark = pytest.mark.slow

RECORDS = [
    PromptRecord(f"q{i}", "math", (Message("user", f"What is {a} + {b}?"),))
    for i, (a, b) in enumerate([(12, 30), (7, 8), (40, 2)])
]


def answers(record: PromptRecord) -> list[str]:
    a, b = (int(x) for x in record.messages[0].content.removeprefix("What is ").rstrip("?").split(" + "))
    return [f"{a} + {b} = {a + b}", f"{a} + {b} = {a + b + 7}", "I do not know."]


@pytest.mark.parametrize("mode", ["pointwise", "relative"])
def test_a_real_vllm_judge_gives_parsed_verdicts(vllm_fleet, base_model, tmp_path, mode):
    server = vllm_fleet[0]
    params = {
        "base_url": server.url + "/v1",
        "model": str(base_model.path),
        "rubric": "The answer must state the correct sum. A wrong sum or no sum scores 0.",
        "mode": mode,
        "cache_dir": str(tmp_path),
        "max_tokens": 60,
    }
    judge = JudgeScorer(**params)  # type: ignore[arg-type]
    scored = [judge.score(record, answers(record)) for record in RECORDS]
    values = [v for row in scored for v in row]
    # Structured output makes the small model answer in the verdict's shape: every candidate scored.
    assert all(v is not None and 0.0 <= v <= 1.0 for v in values), (values, judge.stats.summary())
    calls = 9 if mode == "pointwise" else 3
    assert dict(judge.stats.calls) == {"ok": calls} and not judge.stats.failures
    assert judge.stats.prompt_tokens > 0 and judge.stats.completion_tokens > 0
    if mode == "relative":
        assert [m is not None for m in judge.stats.position_means()] == [True] * 3
    judge.close()
    again = JudgeScorer(**params)  # type: ignore[arg-type]
    assert [again.score(record, answers(record)) for record in RECORDS] == scored
    assert again.stats.cached == calls and not again.stats.calls

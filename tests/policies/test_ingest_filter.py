import pytest

from taoflow.policies.ingest_filter import IngestFilter, decide_ingest

RULES = IngestFilter(
    keep_status=frozenset({200}),
    sample_rates={"chat": 0.0, "half": 0.5},
    max_prompt_chars=100,
    task_map={"endpoint-7": "chat", "ep-half": "half"},
)


@pytest.mark.parametrize(
    ("task", "status", "chars", "keep", "reason", "mapped"),
    [
        ("math", 200, 10, True, "kept", "math"),
        ("math", None, 10, True, "kept", "math"),  # no status logged: nothing to judge
        ("math", 500, 10, False, "status_code", "math"),
        ("math", 200, 101, False, "too_long", "math"),
        ("endpoint-7", 200, 10, False, "sampled_out", "chat"),  # mapped first, then sampled at 0%
        ("math", 404, 500, False, "status_code", "math"),  # the first failing rule names the reason
    ],
)
def test_decide_ingest_table(task, status, chars, keep, reason, mapped):
    decision = decide_ingest(request_id="r1", task=task, status_code=status, prompt_chars=chars, rules=RULES)
    assert (decision.keep, decision.reason, decision.task) == (keep, reason, mapped)


def test_sampling_is_by_request_id_and_close_to_the_rate():
    verdicts = [
        decide_ingest(request_id=f"r{i}", task="ep-half", status_code=200, prompt_chars=1, rules=RULES).keep
        for i in range(2000)
    ]
    assert 0.45 < sum(verdicts) / len(verdicts) < 0.55
    again = [
        decide_ingest(request_id=f"r{i}", task="ep-half", status_code=200, prompt_chars=1, rules=RULES).keep
        for i in range(2000)
    ]
    assert verdicts == again


def test_empty_keep_status_keeps_every_status():
    rules = IngestFilter(keep_status=frozenset())
    assert decide_ingest(request_id="r", task="t", status_code=503, prompt_chars=1, rules=rules).keep

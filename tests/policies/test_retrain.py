import pytest

from taoflow.policies.retrain import RetrainPolicy, RetrainState, decide_retrain, when

NOW = 1_800_000_000.0
HOUR = 3600.0


def state(**kw):
    return RetrainState(now=NOW, **kw)


CASES = [
    # (name, policy, state, trigger, rule)
    ("paused wins", RetrainPolicy(min_new_prompts=1), state(new_prompts={"a": 500}, paused=True), False, "paused"),
    (
        "one round at a time",
        RetrainPolicy(min_new_prompts=1),
        state(new_prompts={"a": 9}, running=True),
        False,
        "running",
    ),
    (
        "too few prompts",
        RetrainPolicy(min_new_prompts=100),
        state(new_prompts={"a": 60, "b": 39}),
        False,
        "min_prompts",
    ),
    (
        "enough in all tasks together",
        RetrainPolicy(min_new_prompts=100),
        state(new_prompts={"a": 60, "b": 40}),
        True,
        "ready",
    ),
    (
        "per task: none has enough alone",
        RetrainPolicy(min_new_prompts=100, per_task=True),
        state(new_prompts={"a": 60, "b": 40}),
        False,
        "min_prompts",
    ),
    (
        "cooldown after the last round",
        RetrainPolicy(min_new_prompts=1, cooldown_seconds=HOUR),
        state(new_prompts={"a": 500}, last_started_at=NOW - 2 * HOUR, last_finished_at=NOW - HOUR / 2),
        False,
        "cooldown",
    ),
    (
        "cooldown over",
        RetrainPolicy(min_new_prompts=1, cooldown_seconds=HOUR),
        state(new_prompts={"a": 500}, last_started_at=NOW - 3 * HOUR, last_finished_at=NOW - 2 * HOUR),
        True,
        "ready",
    ),
    (
        "interval not yet passed",
        RetrainPolicy(min_new_prompts=1, cooldown_seconds=0, interval_seconds=6 * HOUR),
        state(new_prompts={"a": 500}, last_started_at=NOW - 2 * HOUR, last_finished_at=NOW - HOUR),
        False,
        "schedule",
    ),
    (
        "interval passed",
        RetrainPolicy(min_new_prompts=1, cooldown_seconds=0, interval_seconds=6 * HOUR),
        state(new_prompts={"a": 500}, last_started_at=NOW - 7 * HOUR, last_finished_at=NOW - 6 * HOUR),
        True,
        "ready",
    ),
    (
        "cron: no window since the last round",
        RetrainPolicy(min_new_prompts=1, cooldown_seconds=0, scheduled_by_cron=True),
        state(new_prompts={"a": 500}, last_finished_at=NOW - HOUR, next_cron_at=NOW + HOUR),
        False,
        "schedule",
    ),
    (
        "cron: a window opened",
        RetrainPolicy(min_new_prompts=1, cooldown_seconds=0, scheduled_by_cron=True),
        state(new_prompts={"a": 500}, last_finished_at=NOW - HOUR, cron_opened_at=NOW - 60),
        True,
        "ready",
    ),
    (
        "cron window but too few prompts",
        RetrainPolicy(min_new_prompts=100, cooldown_seconds=0, scheduled_by_cron=True),
        state(new_prompts={"a": 5}, cron_opened_at=NOW - 60),
        False,
        "min_prompts",
    ),
    (
        "stale: runs with fewer than the minimum",
        RetrainPolicy(
            min_new_prompts=100, max_staleness_seconds=24 * HOUR, staleness_min_prompts=10, cooldown_seconds=0
        ),
        state(new_prompts={"a": 12}, last_started_at=NOW - 25 * HOUR, last_finished_at=NOW - 24 * HOUR),
        True,
        "staleness",
    ),
    (
        "stale but almost nothing new",
        RetrainPolicy(
            min_new_prompts=100, max_staleness_seconds=24 * HOUR, staleness_min_prompts=10, cooldown_seconds=0
        ),
        state(new_prompts={"a": 9}, last_started_at=NOW - 25 * HOUR),
        False,
        "min_prompts",
    ),
    (
        "backed off after repeated rejections",
        RetrainPolicy(min_new_prompts=1, cooldown_seconds=60, max_consecutive_rejections=3, backoff_seconds=24 * HOUR),
        state(new_prompts={"a": 500}, last_finished_at=NOW - HOUR, consecutive_rejections=3),
        False,
        "backoff",
    ),
    (
        "two rejections: normal cooldown",
        RetrainPolicy(min_new_prompts=1, cooldown_seconds=60, max_consecutive_rejections=3, backoff_seconds=24 * HOUR),
        state(new_prompts={"a": 500}, last_finished_at=NOW - HOUR, consecutive_rejections=2),
        True,
        "ready",
    ),
]


@pytest.mark.parametrize(("name", "policy", "given", "trigger", "rule"), CASES, ids=[c[0] for c in CASES])
def test_decisions(name, policy, given, trigger, rule):
    decision = decide_retrain(policy, given)
    assert (decision.trigger, decision.rule) == (trigger, rule), decision.reason
    assert decision.reason


def test_per_task_rounds_name_only_the_ready_tasks():
    decision = decide_retrain(
        RetrainPolicy(min_new_prompts=50, per_task=True), state(new_prompts={"sql": 80, "json": 20, "math": 50})
    )
    assert decision.trigger and decision.tasks == ("math", "sql")
    assert "sql: 80" in decision.reason


def test_budget_caps_the_prompts_of_a_round():
    decision = decide_retrain(
        RetrainPolicy(min_new_prompts=1, budget_samples=1000), state(new_prompts={"a": 5000}, samples_per_prompt=8)
    )
    assert decision.max_prompts == 125


def test_waiting_decisions_say_when_to_look_again_and_back_off_alerts():
    cooling = decide_retrain(
        RetrainPolicy(min_new_prompts=1, cooldown_seconds=HOUR), state(new_prompts={"a": 1}, last_finished_at=NOW - 60)
    )
    assert cooling.next_check_at == NOW - 60 + HOUR and cooling.alert is None
    backing = decide_retrain(
        RetrainPolicy(min_new_prompts=1, max_consecutive_rejections=2, backoff_seconds=10 * HOUR),
        state(new_prompts={"a": 1}, last_finished_at=NOW - 2 * HOUR, consecutive_rejections=4),
    )
    assert backing.next_check_at == NOW + 8 * HOUR
    assert backing.alert is not None and "4 consecutive gate rejections" in backing.alert


@pytest.mark.parametrize(
    ("at", "now", "shown"),
    [
        (1_795_379_775, 1_795_376_175, "2026-11-22 20:36:15 UTC, in 60 min"),
        (1_795_379_775, 1_795_379_745, "2026-11-22 20:36:15 UTC, in 30 s"),
        (1_795_379_775, 1_795_379_775 + 7200, "2026-11-22 20:36:15 UTC, 2.0 h ago"),
        (1_795_379_775, 1_795_379_775 - 3 * 86400, "2026-11-22 20:36:15 UTC, in 3.0 days"),
    ],
)
def test_times_in_reasons_read_as_utc_and_a_distance(at, now, shown):
    assert when(at, now) == shown


def test_a_cooldown_reason_names_its_end_as_people_read_it():
    state = RetrainState(now=1_795_376_175, new_prompts={"a": 500}, last_finished_at=1_795_376_175 - 10)
    decision = decide_retrain(RetrainPolicy(cooldown_seconds=3600), state)
    assert decision.rule == "cooldown"
    assert decision.reason == "cooldown until 2026-11-22 20:36:05 UTC, in 60 min"

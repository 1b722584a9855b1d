import pytest

from taoflow.policies.admission import plan_evictions


@pytest.mark.parametrize(
    ("new", "cap", "quotas", "evicted"),
    [
        ({"a": 5, "b": 3}, 10, None, {}),  # within the cap
        ({"a": 5, "b": 5}, 10, None, {}),  # exactly at it
        ({"a": 90, "b": 5}, 20, None, {"a": 75}),  # the loud task gives up what the quiet one does not need
        ({"a": 50, "b": 50, "c": 2}, 20, None, {"a": 41, "b": 41}),  # shares: c keeps 2, a and b 9 each
        ({"a": 30, "b": 30}, 20, {"a": 5}, {"a": 25, "b": 15}),  # a quota caps a task below its share
        ({"a": 3}, 10, {"a": 1}, {"a": 2}),  # a quota applies under the cap too
        ({"a": 1, "b": 1, "c": 1}, 2, None, {"a": 1}),  # fewer places than tasks: the cap holds
        ({"a": 0, "b": 4}, 2, None, {"b": 2}),
    ],
)
def test_each_task_keeps_its_share_and_the_cap_holds(new, cap, quotas, evicted):
    plan = plan_evictions(new, cap=cap, quotas=quotas)
    assert dict(plan.per_task) == evicted
    assert sum(new.values()) - plan.total <= cap
    assert plan.reason


def test_the_reason_names_what_each_task_keeps():
    plan = plan_evictions({"support": 90, "sql": 5}, cap=20)
    assert plan.reason == "95 untrained prompts over the cap of 20: support keeps 15 of 90"

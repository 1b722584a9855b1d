"""What a prompt may be trained toward: a table of the evidence a log gives, and the decision."""

import pytest

from taoflow.policies.tool_use import expected_answer

CASES = [
    # offers_tools, tool_choice, last_role, served_call, served_text -> kind
    (False, None, "user", False, False, "text"),
    (True, "none", "user", False, False, "text"),
    (True, "required", "user", False, True, "call"),
    (True, "get_weather", "tool", False, True, "call"),
    (True, "auto", "user", True, False, "call"),
    (True, None, "user", False, True, "either"),
    (True, None, "tool", False, False, "either"),
    (True, "auto", "user", False, False, "call"),
]


@pytest.mark.parametrize(("offers", "choice", "last", "call", "text", "kind"), CASES)
def test_what_a_prompt_may_be_trained_toward(offers, choice, last, call, text, kind):
    expected = expected_answer(
        offers_tools=offers, tool_choice=choice, last_role=last, served_call=call, served_text=text
    )
    assert expected.kind == kind and expected.reason
    assert expected.allows(is_call=True) == (kind != "text")
    assert expected.allows(is_call=False) == (kind != "call")

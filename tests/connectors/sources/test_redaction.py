import pytest

from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.sources.redaction import Redactor


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+x@corp.example.com now", "mail me at [EMAIL] now"),
        ("call +1 415-555-0100 or (020) 7946 0958", "call [PHONE] or [PHONE]"),
        ("key sk-proj-abcdefghijklmnopqrstuvwx end", "key [SECRET] end"),
        ("aws AKIAIOSFODNN7EXAMPLE here", "aws [SECRET] here"),
        ("Authorization: Bearer abcdefghijklmnop1234567890", "Authorization: [SECRET]"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [SECRET]"),
        ("What is 17 + 25?", "What is 17 + 25?"),
        ("year 2026 and 3.14159", "year 2026 and 3.14159"),
    ],
)
def test_redacts_what_it_should_and_nothing_else(text, expected):
    assert Redactor(["secrets", "emails", "phones"]).text(text) == expected


def test_record_redaction_covers_every_message_and_the_response():
    record = PromptRecord(
        "r1", "t", (Message("system", "ops@x.io"), Message("user", "hi bob@y.org")), response="z@w.net"
    )
    redacted = Redactor(["emails"]).record(record)
    assert [m.content for m in redacted.messages] == ["[EMAIL]", "hi [EMAIL]"]
    assert redacted.response == "[EMAIL]"
    assert redacted.request_id == "r1"


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown redaction kinds"):
        Redactor(["ssn"])

import random
import re

import pytest

from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.sources import redaction
from taoflow.connectors.sources.redaction import Redactor

EVERYTHING = Redactor(["secrets", "emails", "phones"])

# Secret shapes and whether the redactor catches them: the table is the design, a change to it is a decision.
SHAPES = [
    ("mail me at jane.doe+x@corp.example.com now", "mail me at [EMAIL] now"),
    ("two: a@b.io,c.d@e-f.example.org.", "two: [EMAIL],[EMAIL]."),
    ("call +1 415-555-0100 or (020) 7946 0958", "call [PHONE] or [PHONE]"),
    ("E.164 +14155550100 here", "E.164 [PHONE] here"),
    ("key sk-proj-abcdefghijklmnopqrstuvwx end", "key [SECRET] end"),
    ("stripe sk_live_abcdefghijklmnop1234 and rk_test_abcdefghijklmnop1234", "stripe [SECRET] and [SECRET]"),
    ("aws AKIAIOSFODNN7EXAMPLE and ASIAIOSFODNN7EXAMPLE", "aws [SECRET] and [SECRET]"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "[SECRET]"),
    ("Authorization: Bearer abcdefghijklmnop1234567890", "Authorization: [SECRET]"),
    ("Authorization: Basic dXNlcjpodW50ZXIy", "Authorization: [SECRET]"),
    ("token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "token [SECRET]"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "[SECRET]"),
    ("google AIzaSyA-abcdefghijklmnopqrstuvwxyz01234", "google [SECRET]"),
    ("hf_abcdefghijklmnopqrstuvwxyz0123456 is mine", "[SECRET] is mine"),
    ("db password=hunter2&user=x", "db [SECRET]&user=x"),
    ('{"api_key": "abc123"}', '{"[SECRET]"}'),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXh5eg", "jwt [SECRET]"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", "[SECRET]"),
    # Not caught, by design: no shape tells them from ordinary text.
    ("my pin is 4921", "my pin is 4921"),
    ("secret sauce: vinegar", "secret sauce: vinegar"),
    ("What is 17 + 25?", "What is 17 + 25?"),
    ("year 2026 and 3.14159", "year 2026 and 3.14159"),
    ("an @mention and user@localhost", "an @mention and user@localhost"),
]


@pytest.mark.parametrize(("text", "expected"), SHAPES)
def test_redacts_what_it_should_and_nothing_else(text, expected):
    assert EVERYTHING.text(text) == expected


def test_record_redaction_covers_every_message_the_response_and_the_metadata():
    record = PromptRecord(
        "r1",
        "t",
        (Message("system", "ops@x.io"), Message("user", "hi bob@y.org")),
        response="z@w.net",
        metadata={
            "user_email": "ann@corp.example.com",
            "api_key": "k-123",
            "requester": "ann",
            "note": "reach me at +14155550100",
            "status_code": 200,
            "nested": {"session_token": "abc", "tags": ["ok", "x@y.io"]},
        },
    )
    redacted = EVERYTHING.record(record)
    assert [m.content for m in redacted.messages] == ["[EMAIL]", "hi [EMAIL]"]
    assert redacted.response == "[EMAIL]" and redacted.request_id == "r1"
    assert redacted.metadata == {
        "user_email": "[REDACTED]",
        "api_key": "[REDACTED]",
        "requester": "[REDACTED]",
        "note": "reach me at [PHONE]",
        "status_code": 200,
        "nested": {"session_token": "[REDACTED]", "tags": ["ok", "[EMAIL]"]},
    }


def test_dead_letters_are_redacted_too():
    from taoflow.daemon.ingest.ingestor import RecordPreparer

    raw = b'{"request": {"messages": "not a list"}, "api_key": "sk-proj-abcdefghijklmnopqrstuvwx", "who": "a@b.io"}'
    (dead,) = RecordPreparer(redactor=EVERYTHING).prepare([SourceItem(raw, "x")]).dead
    assert b"sk-proj" not in dead.payload and b"a@b.io" not in dead.payload
    assert b"[SECRET]" in dead.payload and b"[EMAIL]" in dead.payload


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown redaction kinds"):
        Redactor(["ssn"])


# The JWT pattern as a single regex: the reference the linear matcher must agree with (the regex itself scans up to
# 4 096 characters at every `eyJ` of a run: seconds on a megabyte of "eyJ-").
JWT_REFERENCE = re.compile(r"\beyJ[A-Za-z0-9_\-]{8,4096}\.[A-Za-z0-9_\-]{8,4096}\.[A-Za-z0-9_\-]{8,4096}")


def jwt_cases() -> list[str]:
    rng = random.Random(7)
    cases = [
        "eyJ" + "x" * 5000 + "-eyJ" + "a" * 20 + "." + "b" * 10 + "." + "c" * 5000,  # a header too long, then one
        "eyJ" + "a" * 4093 + "." + "b" * 4096 + "." + "c" * 9,  # every part at its limit
        "eyJ" + "a" * 4094 + "." + "b" * 8 + "." + "c" * 8,  # a header one past it
        "_eyJabcdefgh.abcdefgh.abcdefgh and éeyJabcdefgh.abcdefgh.abcdefgh",  # not at a word's start
        "eyJ-" * 3000,
    ]
    for alphabet, longest, count in (("eyJ.-_ab é", 80, 3000), ("eyJ.x", 9000, 60), ("eyJ.-xxxxxxxx", 400, 600)):
        cases += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest))) for _ in range(count)]
    return cases


def test_jwts_are_found_exactly_where_the_reference_pattern_finds_them():
    only_secrets = Redactor(["secrets"])
    for text in jwt_cases():
        assert only_secrets.text(text) == JWT_REFERENCE.sub("[SECRET]", text), text[:120]


def test_a_long_text_is_redacted_a_window_at_a_time_with_the_same_result():
    rng = random.Random(3)
    pieces = [text for text, expected in SHAPES if text != expected] + ["plain words", "x" * 300, "\n"]
    text = " ".join(rng.choice(pieces) for _ in range(6000))  # ~200 KB: matches across every window's edge
    assert len(text) > 10 * redaction._WINDOW
    whole = redaction._SECRETS.sub("[SECRET]", text), redaction._PHONES.sub("[PHONE]", text)
    windowed = (
        redaction._sub_windowed(redaction._SECRETS, text, "[SECRET]", longest=redaction._LONGEST_SECRET),
        redaction._sub_windowed(redaction._PHONES, text, "[PHONE]", longest=redaction._LONGEST_PHONE),
    )
    assert windowed == whole

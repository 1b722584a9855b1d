import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from taoflow.connectors.records import Message, PromptRecord, folded_text, normalised_prompt_hash


def reference(text: str) -> bytes:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split()).encode()


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=200))
def test_the_ascii_fast_path_folds_exactly_like_split_and_join(text):
    assert folded_text(text) == reference(text)


@given(st.text(max_size=80))
def test_any_text_folds_like_the_reference(text):
    assert folded_text(text) == reference(text)


def test_the_hash_of_a_conversation_is_stable_across_versions():
    # Stored buffers dedup on this value and the held-out split is drawn from it: it must never change.
    messages = (
        Message("system", "Be  brief.\n"),
        Message("user", "What IS 2 +\t2?\r\n Thanks\x1f"),
        Message("user", "Ça va? ﬁne\u3000ok"),
    )
    assert normalised_prompt_hash(messages) == "b77a718995a471ac349cf0dc057a3d19cf1c1914312cf7c4c3a40ebe6b2a100f"
    same = PromptRecord(
        "x",
        "t",
        (Message("system", "be brief."), Message("user", "what is 2 + 2? thanks"), Message("user", "ça va? fine ok")),
    )
    assert same.prompt_hash == normalised_prompt_hash(messages)


def test_records_survive_their_json_form_including_what_orjson_refuses():
    record = PromptRecord("r1", "t", (Message("user", "hi ☃"),), 1.5, "ok", {"big": 2**70, "nested": {"a": [1]}})
    assert PromptRecord.from_json(record.to_json()) == record

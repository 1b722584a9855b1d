"""The rule that turns rows a Delta commit removed into erasures, as a table."""

import pytest

from taoflow.policies.erasure import ErasureKey, erasures_of_removed_rows

KEPT_IDS = {"kept-1", "kept-2"}
KEPT_HASHES = {"h-kept-1", "h-shared"}


@pytest.mark.parametrize(
    ("removed", "keys", "unparsed"),
    [
        # A request the commit did not keep: it goes, with its prompt.
        ([("gone", "h-gone")], [ErasureKey(request_id="gone", prompt_hash="h-gone")], []),
        # ... but a prompt another kept row still holds stays (only the request goes).
        ([("gone", "h-shared")], [ErasureKey(request_id="gone", text_live=True)], []),
        # A kept request with another text now: its old prompt goes.
        ([("kept-2", "h-old")], [ErasureKey(prompt_hash="h-old")], []),
        # A row the commit rewrote unchanged erases nothing.
        ([("kept-1", "h-kept-1")], [], []),
        # Rows that never parsed are the caller's to dead-letter, in their positions.
        ([None, ("gone", "h-gone"), None], [ErasureKey(request_id="gone", prompt_hash="h-gone")], [0, 2]),
        ([], [], []),
    ],
)
def test_removed_rows_erase_what_the_commit_did_not_keep(removed, keys, unparsed):
    decision = erasures_of_removed_rows(removed, KEPT_IDS, KEPT_HASHES)
    assert list(decision.keys) == keys
    assert list(decision.unparsed) == unparsed
    assert decision.reason.startswith(f"{len(removed)} removed rows: ")


def test_the_reason_counts_each_kind():
    removed = [("gone", "h-gone"), ("kept-2", "h-old"), ("kept-1", "h-kept-1"), None]
    decision = erasures_of_removed_rows(removed, KEPT_IDS, KEPT_HASHES)
    assert decision.reason == (
        "4 removed rows: 1 requests the commit did not keep, 1 old prompts of requests kept with another text, "
        "1 unchanged, 1 unparsable"
    )

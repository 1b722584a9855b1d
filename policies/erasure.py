"""What a source's deletion erases: the rule that turns rows a Delta commit removed into erasures.

A commit that removes rows (a DELETE, a MERGE, a rewrite) may also add rows back: the rows it keeps. A removed
row whose request the commit did not keep is erased; its prompt text goes too unless a kept row still holds
it. A removed row whose request was kept, but with another text, erases only its old prompt. Rows that never
parsed cannot be matched to a prompt: they are the caller's to dead-letter.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

__all__ = ["ErasureKey", "RemovedRowsDecision", "erasures_of_removed_rows"]


@dataclass(frozen=True)
class ErasureKey:
    """What identifies an erased prompt: its request id, its prompt hash (hex), or both."""

    request_id: str | None = None
    prompt_hash: str | None = None
    #: The prompt's text is still live in the source under other requests: the request goes, the text may stay.
    text_live: bool = False


@dataclass(frozen=True)
class RemovedRowsDecision:
    keys: tuple[ErasureKey, ...]
    unparsed: tuple[int, ...]  # positions of the removed rows that could not be identified
    reason: str


def erasures_of_removed_rows(
    removed: Sequence[tuple[str, str] | None], kept_ids: Collection[str], kept_hashes: Collection[str]
) -> RemovedRowsDecision:
    """`removed`: each removed row as (request id, prompt hash), or None where it did not parse; `kept_ids` and
    `kept_hashes`: the request ids and prompt hashes of the rows the commit kept."""
    keys: list[ErasureKey] = []
    unparsed: list[int] = []
    requests = prompts = 0
    for position, row in enumerate(removed):
        if row is None:
            unparsed.append(position)
            continue
        request_id, prompt_hash = row
        if request_id not in kept_ids:
            live = prompt_hash in kept_hashes
            keys.append(ErasureKey(request_id=request_id, prompt_hash=None if live else prompt_hash, text_live=live))
            requests += 1
        elif prompt_hash not in kept_hashes:
            keys.append(ErasureKey(prompt_hash=prompt_hash))
            prompts += 1
    reason = (
        f"{len(removed)} removed rows: {requests} requests the commit did not keep, {prompts} old prompts of "
        f"requests kept with another text, {len(removed) - requests - prompts - len(unparsed)} unchanged, "
        f"{len(unparsed)} unparsable"
    )
    return RemovedRowsDecision(keys=tuple(keys), unparsed=tuple(unparsed), reason=reason)

import hashlib

from taoflow.policies.split import assign_split


def h(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_fraction_is_respected_and_stable():
    splits = [assign_split(h(i), heldout_fraction=0.25, heldout_count=0, heldout_max=10**9) for i in range(4000)]
    share = splits.count("heldout") / len(splits)
    assert 0.22 < share < 0.28
    assert splits == [
        assign_split(h(i), heldout_fraction=0.25, heldout_count=0, heldout_max=10**9) for i in range(4000)
    ]


def test_cap_and_zero_fraction_send_everything_to_train():
    assert {assign_split(h(i), heldout_fraction=0.9, heldout_count=5, heldout_max=5) for i in range(50)} == {"train"}
    assert {assign_split(h(i), heldout_fraction=0.0, heldout_count=0, heldout_max=5) for i in range(50)} == {"train"}

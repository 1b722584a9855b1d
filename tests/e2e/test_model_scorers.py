"""The model scorers on real models: self-certainty with the real small model as policy, and a reward model
built in the test session from that model and trained on preference pairs that the verifiers label."""

from __future__ import annotations

import random

import pytest

from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.scoring.models import PolicyRef, RewardModelScorer, SelfCertaintyScorer
from taoflow.connectors.scoring.verifiers import ArithmeticScorer
from taoflow.daemon.round.parts import TaskScorers
from taoflow.daemon.settings import ScorerSpec

pytestmark = pytest.mark.slow


def question(a: int, b: int) -> PromptRecord:
    return PromptRecord(f"q{a}-{b}", "math", (Message("user", f"What is {a} + {b}?"),))


def labelled_pairs(rng: random.Random, count: int) -> list[tuple[PromptRecord, str, str]]:
    """(prompt, chosen, rejected) where the arithmetic verifier scores chosen 1 and rejected 0."""
    verifier = ArithmeticScorer()
    pairs = []
    while len(pairs) < count:
        a, b = rng.randint(10, 60), rng.randint(10, 60)
        record = question(a, b)
        chosen = f"{a} + {b} = {a + b}"
        rejected = rng.choice([f"{a} + {b} = {a + b + rng.randint(3, 30)}", "I am not sure.", f"It is {a * b}."])
        if list(verifier.score(record, [chosen, rejected])) == [1.0, 0.0]:
            pairs.append((record, chosen, rejected))
    return pairs


@pytest.fixture(scope="session")
def reward_model(base_model, tmp_path_factory):
    """A head on the real small model, trained on 320 verifier-labelled pairs (tests/reward_model.py)."""
    from tests.support.reward_model import train_reward_head

    pairs = [([m.as_dict() for m in r.messages], good, bad) for r, good, bad in labelled_pairs(random.Random(0), 320)]
    return train_reward_head(base_model.path, tmp_path_factory.mktemp("reward-model"), pairs)


def test_a_trained_reward_model_prefers_what_the_verifier_prefers(reward_model):
    scorer = RewardModelScorer(model_dir=str(reward_model))
    held_out = labelled_pairs(random.Random(1000), 40)  # another draw than the training's
    records = [p[0] for p in held_out]
    scorer.prepare("math", records, [[p[1], p[2]] for p in held_out])
    stats = scorer.scores.normaliser.summary()["math"]
    assert stats["n"] == 80 and stats["std"] > 0
    wins = 0
    for record, chosen, rejected in held_out:
        good, bad = scorer.score(record, [chosen, rejected])
        assert good is not None and bad is not None and 0.0 <= min(good, bad) <= max(good, bad) <= 1.0
        wins += good > bad
    assert wins / len(held_out) >= 0.75, f"pairwise accuracy {wins / len(held_out):.2f}"


def test_self_certainty_rates_the_policys_own_answer_above_noise(base_model, generator):
    from taoflow.connectors.protocols import SamplingConfig

    policy = PolicyRef(model_dir=base_model.path)
    scorer = SelfCertaintyScorer(policy=policy)
    records = [question(a, b) for a, b in [(12, 30), (7, 8), (40, 2), (25, 25)]]
    greedy = generator.generate([r.messages for r in records], SamplingConfig(n=1, temperature=0.0, max_new_tokens=24))
    noise = ["qz7 lamp ferro !! blue 19 xx", "purple purple seven ) ( 88", "zebra 40 2 minus clock", "grape 9"]
    for record, (own,), junk in zip(records, greedy, noise, strict=True):
        confident, confused = scorer.score(record, [own.text, junk])
        assert confident is not None and confused is not None and confident > confused, (own.text, junk)
    assert len(scorer.scores.raw) == 8
    # Through the task's scorers: the round names the policy, prepares the task, and the statistics are stored.
    specs = [ScorerSpec(type="self_certainty", params={})]
    scorers = TaskScorers({"math": specs}, specs)
    scorers.use_policy(base_model.path, None)
    scorers.prepare(records, [[g[0].text, junk] for g, junk in zip(greedy, noise, strict=True)])
    saved = scorers.normalisation()
    assert saved["math"]["self_certainty"]["n"] == 8
    fresh = TaskScorers({"math": specs}, specs)
    fresh.use_policy(base_model.path, None)
    fresh.restore(saved)
    (value,) = fresh.for_task("math").score(records[0], [greedy[0][0].text])
    (same,) = scorers.for_task("math").score(records[0], [greedy[0][0].text])
    assert value == pytest.approx(same)

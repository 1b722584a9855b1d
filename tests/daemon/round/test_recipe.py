"""The recipe on its own, fast: a fake generator (the Generator protocol), the real arithmetic verifier in this
process, and a trainer that records what it was given and writes a minimal LoRA directory. The real model runs
whole rounds in tests/e2e/test_round.py; here each path of the recipe runs in well under a second."""

from __future__ import annotations

import json
import re

import pytest

from taoflow.connectors.errors import NothingToTrain
from taoflow.connectors.protocols import Completion
from taoflow.connectors.records import Message, PromptRecord, as_chat
from taoflow.connectors.training.lora import TrainingResult
from taoflow.daemon.cli.report import round_table
from taoflow.daemon.round import local_stages
from taoflow.daemon.round.local_stages import LocalStages
from taoflow.daemon.round.parts import build_gate_scorers, build_scorers
from taoflow.daemon.round.recipe import TaoRound
from taoflow.daemon.round.stages import RoundWork
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.erasure import forget
from taoflow.daemon.store.state import State


class ArithmeticGenerator:
    """Answers "What is a + b?": sampled candidates are right when `solves` says so; greedy answers are right with
    an adapter loaded and wrong without one (a tuned model beats the base)."""

    def __init__(self, solves=lambda index: index == 0):
        self.solves = solves
        self.calls: list[tuple[int, int, bool]] = []  # (prompts, n, adapter loaded)

    def generate(self, conversations, sampling, *, adapter=None, progress=None):
        self.calls.append((len(conversations), sampling.n, adapter is not None))
        rows = []
        for conversation in conversations:
            a, b = map(int, re.findall(r"\d+", as_chat(conversation).messages[-1].content)[:2])
            if sampling.temperature == 0.0:
                rows.append([Completion(str(a + b if adapter is not None else a + b + 1), 2, True)])
            else:
                rows.append(
                    [Completion(str(a + b if self.solves(i) else a + b + 7), 2, True) for i in range(sampling.n)]
                )
            if progress is not None:
                progress(1)
        return rows

    def close(self):
        pass


class RecordingTrainer:
    """Stands in for TRL: records each call's examples and writes an adapter the artifact store accepts."""

    def __init__(self):
        self.calls: list[list[tuple[str, str]]] = []

    def __call__(self, base, examples, config, *, work_dir, progress=None, reward=None, callbacks=()):
        self.calls.append([(e.messages[-1].content, e.completion) for e in examples])
        adapter = work_dir / "adapter"
        adapter.mkdir(parents=True, exist_ok=True)
        (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": config.lora_rank}))
        (adapter / "adapter_model.safetensors").write_bytes(b"weights")
        return TrainingResult(adapter_dir=adapter, steps=1, samples_seen=len(examples), seconds=0.01, final_loss=0.5)


@pytest.fixture
def trainer(monkeypatch):
    recording = RecordingTrainer()
    monkeypatch.setattr(local_stages, "train_adapter", recording)
    return recording


def seeded(tmp_path, prompts: int = 16, **overrides) -> State:
    base = tmp_path / "base"
    base.mkdir(exist_ok=True)
    (base / "config.json").write_text("{}")
    sections = {
        "storage": {"state_dir": str(tmp_path / "state")},
        "model": {"base": str(base), "device": "cpu", "dtype": "float32"},
        "generate": {"n": 3, "max_prompts": 6},
        "train": {"score_threshold": 0.5},
        "gate": {"min_samples": 2, "min_slice_samples": 1, "confidence": 0.0},
        "ingest": {"heldout_fraction": 0.4, "heldout_max_per_task": 4},
        "score": {"tasks": {"math": [{"type": "arithmetic"}]}, "sandbox": {"enabled": False}},
    }
    for section, values in overrides.items():
        sections[section] = {**sections.get(section, {}), **values}
    state = State(load_settings(None, **sections))
    records = [
        PromptRecord(f"r{i}", "math", (Message("user", f"What is {10 + i} + {20 + 2 * i}?"),)) for i in range(prompts)
    ]
    state.buffer.add_many([(r, None) for r in records], source="test")
    return state


def make_round(state, generator, **kwargs) -> TaoRound:
    s = state.settings
    stages = LocalStages(
        s, state, scorers=build_scorers(s), gate_scorers=build_gate_scorers(s), generator_factory=lambda path: generator
    )
    return TaoRound(s, state, stages=stages, **kwargs)


def test_a_round_runs_every_step_and_promotes_a_better_adapter(tmp_path, trainer):
    state = seeded(tmp_path)
    generator = ArithmeticGenerator()
    record = make_round(state, generator).run()
    assert (record.status, record.step) == ("done", "done"), record.reason
    summary = record.summary
    assert summary.generate.candidates == 3 * summary.prepare.prompts == 18
    assert summary.score.tasks["math"].pass_rate == pytest.approx(1 / 3, abs=1e-3)
    assert summary.train.examples == summary.score.examples == 6 and summary.train.replayed == 0
    assert summary.train.base is not None and summary.train.base.reference == str(tmp_path / "base")
    assert summary.gate.passed and summary.gate.promoted and summary.gate.against == "base"
    assert state.registry.alias("taoflow", "champion") == record.version
    taken = [p.record.messages[-1].content for p in state.buffer.get(record.files.prompts().ids)]
    assert sorted(trainer.calls[0]) == sorted((q, str(sum(map(int, re.findall(r"\d+", q))))) for q in taken)
    # One generator for generation and both sides of the gate: candidates, then the base, then the candidate.
    assert generator.calls == [(6, 3, False), (4, 1, False), (4, 1, True)]


def test_a_round_with_nothing_to_learn_is_skipped_and_its_prompts_tried_again_with_more_candidates(tmp_path, trainer):
    state = seeded(tmp_path, generate={"retry_unsolved": 1})
    never = ArithmeticGenerator(solves=lambda index: False)
    skipped = make_round(state, never).run()
    assert (skipped.status, skipped.step, skipped.summary.skipped_at) == ("skipped", "score", "train")
    assert skipped.reason.startswith("no candidate of 6 prompts scored at least score_threshold 0.5: nothing to learn")
    assert skipped.summary.skip.retry == 6 and trainer.calls == [] and state.registry.versions() == []
    taken = set(skipped.files.prompts().ids)
    assert {p.id: p.attempts for p in state.buffer.training_prompts(100) if p.id in taken} == dict.fromkeys(taken, 1)
    # The next round takes them first (at most half a round while new prompts wait), with twice the candidates.
    again = make_round(state, ArithmeticGenerator()).run()
    retried = again.summary.generate.retried
    assert (retried.prompts, retried.n) == (3, 6)
    assert again.summary.generate.candidates == 3 * 6 + 3 * 3
    assert again.status == "done"
    # The ones it retried are consumed (learnt from now); the others wait for their try.
    retaken = taken & set(again.files.prompts().ids)
    waiting = {p.id: p.attempts for p in state.buffer.training_prompts(100) if p.id in taken}
    assert len(retaken) == 3 and not retaken & waiting.keys() and waiting == dict.fromkeys(taken - retaken, 1)


def test_a_round_trains_again_on_its_champions_examples_except_erased_ones(tmp_path, trainer):
    state = seeded(tmp_path)
    first = make_round(state, ArithmeticGenerator()).run()
    assert first.summary.gate.promoted
    second = make_round(state, ArithmeticGenerator()).run()
    own = second.summary.train.examples
    assert second.summary.train.replayed == first.summary.train.examples == 6
    assert trainer.calls[1][own:] and sorted(trainer.calls[1][own:]) == sorted(trainer.calls[0])
    # An erased prompt's examples are never replayed again.
    erased_prompt = trainer.calls[0][0][0]
    forget(state.db, rounds_dir=state.rounds_dir, texts=[erased_prompt], reason="test")
    from taoflow.daemon.round.stages import replay_examples

    champion = state.registry.alias("taoflow", "champion")
    replayed = replay_examples(state, state.settings, champion, seed=1)
    assert erased_prompt not in {e.messages[-1].content for e in replayed}
    one = state.settings.model_copy(update={"train": state.settings.train.model_copy(update={"replay": 1})})
    assert len(replay_examples(state, one, champion, seed=1)) == 1


def test_a_prompt_erased_before_training_is_not_trained_on(tmp_path, trainer, monkeypatch):
    state = seeded(tmp_path)
    victim: list[PromptRecord] = []
    real_score = LocalStages.score

    def score_then_erase(self, work: RoundWork):
        summary = real_score(self, work)
        victim.append(work.prompts[0].record)
        forget(state.db, rounds_dir=state.rounds_dir, request_ids=[victim[0].request_id], reason="erased mid-round")
        return summary

    monkeypatch.setattr(LocalStages, "score", score_then_erase)
    record = make_round(state, ArithmeticGenerator()).run()
    assert record.status == "done"
    (text,) = [m.content for m in victim[0].messages]
    assert text not in {prompt for prompt, _ in trainer.calls[0]} and len(trainer.calls[0]) == 5
    assert record.summary.train.examples == 5
    # Its round's files lost it when it was erased, the round records it as not trained on, and no adapter holds
    # it: no tombstone.
    assert victim[0].request_id not in record.files.candidates()
    assert record.files.erased() == [victim[0].request_id]
    assert state.db.query("SELECT consumed_by FROM erasures")[0][0] is None


@pytest.mark.parametrize("step", ["prepare", "generate", "score", "train", "register", "gate"])
def test_a_round_interrupted_in_any_step_resumes_there_and_redoes_nothing_before_it(
    tmp_path, trainer, monkeypatch, step
):
    state = seeded(tmp_path)
    generator = ArithmeticGenerator()
    interrupted = make_round(state, generator)
    if step in ("generate", "score", "train"):
        monkeypatch.setattr(LocalStages, step, _interrupt)
    else:
        monkeypatch.setattr(interrupted, step, lambda record: _interrupt(None, record))
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    monkeypatch.undo()
    monkeypatch.setattr(local_stages, "train_adapter", trainer)
    rows = state.db.query("SELECT step, status FROM rounds")
    if step == "prepare":
        assert [tuple(r) for r in rows] == [("pending", "running")]
    else:
        previous = ("pending", "prepare", "generate", "score", "train", "register", "gate")
        assert [tuple(r) for r in rows] == [(previous[previous.index(step) - 1], "running")]
    before = len(generator.calls)
    record = make_round(state, generator).run()
    assert (record.id, record.status) == (1, "done"), record.reason
    # Generation ran once in all; training once; the gate's two evaluations after the resumption.
    assert sum(1 for _, n, _ in generator.calls if n == 3) == 1
    assert len(trainer.calls) == 1
    assert len(generator.calls) - before == (3 if step in ("prepare", "generate") else 2)
    assert [v.version for v in state.registry.versions()] == [record.version]
    assert record.summary.gate.promoted


def test_a_round_with_nothing_new_to_train_is_never_recorded(tmp_path, trainer):
    state = seeded(tmp_path)
    state.buffer.mark_consumed([p.id for p in state.buffer.training_prompts(100)], round_id=0)
    with pytest.raises(NothingToTrain, match="no new training prompts"):
        make_round(state, ArithmeticGenerator()).run()
    assert state.db.query("SELECT count(*) FROM rounds")[0][0] == 0


def _interrupt(self, work, *args):
    raise KeyboardInterrupt  # what SIGINT/SIGTERM do to a process mid-step


class PaddingGenerator(ArithmeticGenerator):
    """Its adapter answers right, padded with words a judge that likes long answers would reward."""

    def generate(self, conversations, sampling, *, adapter=None, progress=None):
        rows = super().generate(conversations, sampling, adapter=adapter, progress=progress)
        if sampling.temperature == 0.0 and adapter is not None:
            pad = " — and I checked it twice, carefully, step by step, so you can rely on it."
            rows = [[Completion(c.text + pad, c.num_tokens, c.finished) for c in row] for row in rows]
        return rows


def test_the_monitors_block_a_better_scoring_adapter_whose_answers_grew_long(tmp_path, trainer):
    state = seeded(tmp_path, gate={"monitors": {"min_answers": 2}})
    record = make_round(state, PaddingGenerator()).run()
    gate = record.summary.gate
    assert gate.slices[0].candidate_mean > gate.slices[0].champion_mean  # the scorer is pleased
    assert not gate.passed and gate.outcome == "monitor" and gate.reason.startswith("monitors: answer_length")
    assert gate.monitors is not None and gate.monitors.length_ratio > 1.5 and gate.monitors.blocked
    assert state.registry.get(record.version).state == "rejected"
    assert "BLOCKED: answer_length" in round_table(record)


def test_the_monitors_read_every_gate_and_let_an_honest_adapter_pass(tmp_path, trainer):
    state = seeded(tmp_path, gate={"monitors": {"min_answers": 2}})
    record = make_round(state, ArithmeticGenerator()).run()
    monitors = record.summary.gate.monitors
    assert record.summary.gate.passed and monitors is not None and not monitors.blocked
    assert monitors.length_ratio == pytest.approx(1.0, abs=0.5) and monitors.refusal_rate == 0.0
    (tmp_path / "off").mkdir()
    off = seeded(tmp_path / "off", gate={"monitors": {"enabled": False}})
    assert make_round(off, PaddingGenerator()).run().summary.gate.monitors is None

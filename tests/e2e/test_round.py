"""A whole round on the real model with a tiny budget, and its resumption after an interruption."""

import json

import pytest

from taoflow.connectors.artifacts.local import check_adapter_dir
from taoflow.connectors.errors import NothingToTrain
from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.round import local_stages as round_module
from taoflow.daemon.round.local_stages import LocalStages
from taoflow.daemon.round.parts import build_gate_scorers, build_scorers
from taoflow.daemon.round.recipe import TaoRound
from taoflow.daemon.round.stages import replay_examples
from taoflow.daemon.store.erasure import forget
from tests.support.rounds import seeded_state

pytestmark = pytest.mark.slow


def local_round(state, generator_factory, *, settings=None, **kwargs) -> TaoRound:
    """The round as `taoflow round` builds it with round.runner local, with the test's generator."""
    settings = settings or state.settings
    stages = LocalStages(
        settings,
        state,
        scorers=build_scorers(settings),
        gate_scorers=build_gate_scorers(settings),
        generator_factory=generator_factory,
    )
    return TaoRound(settings, state, stages=stages, **kwargs)


class CountingGenerator:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def generate(self, conversations, sampling, **kwargs):
        self.calls += 1
        return self.inner.generate(conversations, sampling, **kwargs)

    def close(self):
        self.inner.close()


def test_round_end_to_end_on_the_real_model(tmp_path, generator, base_model):
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        "\n".join(
            json.dumps(
                {"task": "gold", "messages": [{"role": "user", "content": f"What is {i} + 1?"}], "expected": i + 1}
            )
            for i in range(3)
        )
    )
    # The gate judges math by the arithmetic verifier alone; training also rewards brevity (length).
    state = seeded_state(tmp_path, gate={"golden_file": str(golden), "scorers": {"math": [{"type": "arithmetic"}]}})
    counting = CountingGenerator(generator)
    record = local_round(state, lambda path: counting).run()
    assert (record.status, record.step) == ("done", "done")
    summary = record.summary
    assert summary.generate.candidates == 3 * summary.prepare.prompts
    assert summary.generate.tokens > 0
    math_stats = summary.score.tasks["math"]
    assert math_stats.candidates == summary.generate.candidates
    assert 0.0 <= math_stats.mean <= 1.0
    assert summary.train.steps >= 1 and summary.train.final_loss is not None
    gate = summary.gate
    assert gate.against == "base" and gate.slices[0].n == state.buffer.stats().tasks["math"].heldout
    assert [(g.task, g.n) for g in gate.golden] == [("gold", 3)]
    (judged,) = gate.slices
    (trained,) = gate.training_scorers  # the same answers as the training scorers see them, beside
    assert judged.n == trained.n and 0 <= judged.changed <= judged.n
    noise = gate.noise  # the bar is -1 here: bounded below, no sign test asked
    assert noise.confidence == 0.9 and noise.lower <= noise.upper
    assert noise.improved + noise.worsened == judged.changed
    version = state.registry.get(record.version)
    assert version.state == ("champion" if gate.passed else "rejected")
    verdict = "gate passed: " if gate.passed else "gate rejected the adapter: "
    assert record.reason == verdict + gate.reason + ("; promoted to champion" if gate.promoted else "")
    adapter = state.store.fetch(record.version)
    assert check_adapter_dir(adapter)["r"] == 16
    manifest = json.loads((adapter / "taoflow-manifest.json").read_text())
    assert manifest["base_model"] == {"reference": "smollm2-135m-instruct", "digest": base_model.digest}
    assert manifest["data"]["prompts"] == summary.prepare.prompts
    assert set(manifest["timings_seconds"]) >= {"prepare", "generate", "score", "train"}
    assert manifest["scores"]["math"]["candidates"] == summary.generate.candidates
    # Prompts the round learnt from are no longer new, those it found nothing to learn in stay to be tried again
    # (generate.retry_unsolved); held-out prompts are untouched.
    retry = summary.register.retry
    assert 0 <= retry < 6 and summary.train.tokens > 0
    assert state.buffer.stats().tasks["math"].new == state.buffer.stats().tasks["math"].train - 6 + retry
    # Generation (1), the gate's two evaluations (base and candidate) and two on the golden set: one generator.
    assert counting.calls == 5
    assert (summary.generate.backend, summary.generate.device) == ("transformers", "cpu")
    assert (summary.train.device, summary.train.dtype, summary.train.processes) == (
        "cpu",
        "float32",
        1,
    )


def test_an_engine_round_frees_its_generator_before_training_and_builds_it_again_for_the_gate(
    tmp_path, base_model, monkeypatch
):
    # generate.backend vllm: the engine holds accelerator memory that training needs. The factory stands in for the
    # engine (vLLM is not installed beside the trainer here; tests/e2e/test_vllm_backend.py runs the engine itself).
    from taoflow.connectors.generation.local import TransformersGenerator

    state = seeded_state(tmp_path, generate={"backend": "vllm"})
    built, events = [], []

    class Tracked(CountingGenerator):
        def close(self):
            events.append("close")
            super().close()

    def factory(path):
        events.append("build")
        built.append(Tracked(TransformersGenerator(path, batch_rows=32)))
        return built[-1]

    real_train = round_module.train_adapter

    def train(*args, **kwargs):
        events.append("train")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(round_module, "train_adapter", train)
    record = local_round(state, factory).run()
    assert (record.status, record.step) == ("done", "done")
    assert events == ["build", "close", "train", "build"]
    assert [g.calls for g in built] == [1, 2]  # candidates; then the gate's two sides through one generator


def test_a_round_trains_on_several_processes_when_asked(tmp_path, generator):
    state = seeded_state(tmp_path, train={"num_processes": 2})
    record = local_round(state, lambda p: generator).run()
    assert (record.status, record.step) == ("done", "done")
    train = record.summary.train
    assert train.processes == 2 and train.steps >= 1 and train.final_loss is not None
    assert check_adapter_dir(state.store.fetch(record.version))["r"] == 16


def test_a_round_trains_again_on_the_examples_behind_its_champion(tmp_path, generator, monkeypatch):
    # A lenient scorer (any finished answer passes): every round has examples to learn and replay.
    state = seeded_state(tmp_path, score={"tasks": {"math": [{"type": "length", "params": {"max_chars": 1000}}]}})
    real_train, seen = round_module.train_adapter, []

    def recording(base, examples, config, **kwargs):
        seen.append([(e.messages[-1].content, e.completion) for e in examples])
        return real_train(base, examples, config, **kwargs)

    monkeypatch.setattr(round_module, "train_adapter", recording)
    make = lambda: local_round(state, lambda p: generator)  # noqa: E731
    first = make().run()
    assert first.summary.train.replayed == 0 and first.summary.gate.promoted
    own = first.summary.train.examples
    assert own == len(seen[0]) >= 2
    # The next round trains on its own examples and, after them, on the first round's (the champion's) again ...
    second = make().run()
    assert second.summary.train.replayed == own
    assert sorted(seen[1][-own:]) == sorted(seen[0]) and len(seen[1]) == second.summary.train.examples + own
    # The next one would replay both rounds' examples, except those of an erased prompt, and never more than
    # train.replay.
    champion = state.registry.alias(state.settings.model.served_name, "champion")
    assert champion == second.version
    erased = seen[0][0][0]
    forget(state.db, rounds_dir=state.rounds_dir, texts=[erased], reason="test")
    replay = replay_examples(state, state.settings, champion, seed=1)
    assert erased not in {e.messages[-1].content for e in replay}
    assert len(replay) == len(seen[1]) - sum(prompt == erased for prompt, _ in seen[1])
    one = state.settings.model_copy(update={"train": state.settings.train.model_copy(update={"replay": 1})})
    assert len(replay_examples(state, one, champion, seed=1)) == 1


def test_an_interrupted_round_resumes_at_its_next_step(tmp_path, generator, monkeypatch):
    state = seeded_state(tmp_path)
    counting = CountingGenerator(generator)
    real_train = round_module.train_adapter

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what SIGINT/SIGTERM do to a process mid-training

    monkeypatch.setattr(round_module, "train_adapter", killed)
    make = lambda: local_round(state, lambda path: counting, auto_promote=False)  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        make().run()
    (interrupted,) = state.db.query("SELECT id, step, status FROM rounds")
    assert (interrupted["step"], interrupted["status"]) == ("score", "running")
    candidates = (tmp_path / "state" / "rounds" / "round-00001" / "candidates.jsonl").stat().st_mtime_ns

    monkeypatch.setattr(round_module, "train_adapter", real_train)
    real_register = state.registry.register

    def killed_after_store(**kwargs):
        raise KeyboardInterrupt  # stopped between writing the artifact and registering it

    monkeypatch.setattr(state.registry, "register", killed_after_store)
    with pytest.raises(KeyboardInterrupt):
        make().run()
    assert state.db.query("SELECT step FROM rounds")[0]["step"] == "train"
    monkeypatch.setattr(state.registry, "register", real_register)

    record = make().run()
    assert record.id == interrupted["id"] and record.status == "done"
    assert counting.calls == 1 + 2  # generation was not redone: only the gate's evaluations ran again
    assert (tmp_path / "state" / "rounds" / "round-00001" / "candidates.jsonl").stat().st_mtime_ns == candidates
    assert state.registry.get(record.version).state in ("gated", "rejected")
    assert [p.name for p in (tmp_path / "state" / "adapters").iterdir()] == [record.version]


def test_a_failing_step_is_recorded_with_its_reason(tmp_path, generator):
    state = seeded_state(tmp_path)

    def broken(path):
        raise RuntimeError("CUDA out of memory (a generator that cannot start)")

    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        local_round(state, broken).run()
    (row,) = state.db.query("SELECT status, step, reason FROM rounds")
    assert (row["status"], row["step"]) == ("failed", "prepare")
    assert row["reason"] == "generate failed: RuntimeError: CUDA out of memory (a generator that cannot start)"


def test_a_round_with_nothing_new_to_train_is_never_recorded(tmp_path, generator):
    state = seeded_state(tmp_path)
    state.buffer.mark_consumed([p.id for p in state.buffer.training_prompts(100)], round_id=0)
    with pytest.raises(NothingToTrain, match="no new training prompts"):
        local_round(state, lambda p: generator).run()
    assert state.db.query("SELECT count(*) FROM rounds")[0][0] == 0


def test_a_round_with_nothing_to_learn_is_skipped_with_its_figures(tmp_path, generator):
    # A scorer that rates every answer alike: under relative selection no candidate beats its group.
    state = seeded_state(
        tmp_path,
        generate={"retry_unsolved": 1},
        train={"selection": "relative", "relative_margin": 0.1},
        score={"tasks": {"math": [{"type": "regex", "params": {"pattern": "^never matches$"}}]}},
    )
    record = local_round(state, lambda p: generator).run()
    assert (record.status, record.step) == ("skipped", "score")
    assert record.version is None and state.registry.versions() == []
    prompts = record.summary.prepare.prompts
    assert record.reason.startswith(
        f"no candidate of {prompts} prompts beat their group's mean by 0.1 (floor 0): nothing to learn; "
        f"math: {prompts} prompts, best scores median 0.0 max 0.0, 0/{3 * prompts} candidates unscored"
    )
    assert record.summary.skipped_at == "train" and record.summary.skip.skipped == record.reason
    # Its prompts stay to be tried again (generate.retry_unsolved: 1 here), first and with twice the candidates ...
    taken = set(json.loads((record.work_dir / "prompts.json").read_text())["ids"])
    assert record.summary.skip.retry == len(taken) == prompts
    assert {p.id: p.attempts for p in state.buffer.training_prompts(100) if p.id in taken} == dict.fromkeys(taken, 1)
    again = local_round(state, lambda p: generator).run()
    retaken = set(json.loads((again.work_dir / "prompts.json").read_text())["ids"])
    retried = again.summary.generate.retried
    assert (retried.prompts, retried.n) == (len(taken & retaken), 6) and retried.prompts >= prompts // 2
    assert again.summary.generate.candidates == 6 * retried.prompts + 3 * (len(retaken) - retried.prompts)
    # ... and once their tries run out they are consumed: the next round takes others.
    assert again.status == "skipped" and not taken & retaken & {p.id for p in state.buffer.training_prompts(100)}


def test_a_grpo_round_trains_on_the_prompts_whose_answers_score_differently(tmp_path, generator):
    state = seeded_state(
        tmp_path,
        train={
            "objective": "grpo",
            "grpo": {"generations": 2, "max_completion_tokens": 12},
            "relative_margin": 0.05,
            "batch_size": 4,
        },
    )
    record = local_round(state, lambda p: generator).run()
    assert (record.status, record.step) == ("done", "done"), record.reason
    summary = record.summary
    spread = summary.score.tasks["math"].prompts_with_target
    assert summary.train.examples == spread >= 1
    assert summary.train.steps == -(-spread * 2 // 4)  # whole groups of 2 generations, 4 answers a step
    assert check_adapter_dir(state.store.fetch(record.version))["r"] == 16


def test_a_graded_verifier_trains_on_plenty_with_the_defaults(tmp_path, generator):
    """A verifier that scores 0 / 0.5 / 1 and the default train.selection (auto): the round learns from the right
    but wordy answers (relative selection, decided from its candidates and recorded with why) instead of the few
    exact ones a 0.99 threshold would keep."""
    state = seeded_state(
        tmp_path,
        generate={"n": 8, "max_prompts": 80, "max_new_tokens": 24},
        train={"score_threshold": 0.99, "epochs": 1, "batch_size": 16, "save_steps": 100},
        score={
            "tasks": {"math": [{"type": "python", "params": {"callable": "tests.e2e.graded_verifier:partial_credit"}}]}
        },
    )
    pairs = [(a, b) for a in range(2, 10) for b in range(1, 10)]  # sums this small model gets right now and then
    more = [PromptRecord(f"g{a}-{b}", "math", (Message("user", f"What is {a} + {b}?"),)) for a, b in pairs]
    state.buffer.add_many([(r, None) for r in more], source="test")
    record = local_round(state, lambda p: generator).run()
    assert record.status == "done", record.reason
    math = record.summary.score.tasks["math"]
    assert math.score_kind == "graded" and math.selection == "relative", math
    assert math.selection_reason.startswith("scores are graded (0, 0.5") and "seldom reach" in math.selection_reason
    assert record.summary.train.examples >= 30 > math.other_selection_keeps, math
    print(f"\n{math.selection_reason}; trained on {record.summary.train.examples} examples")

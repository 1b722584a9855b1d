"""Scorers that run a model in the round's process: a reward model, and the policy's own self-certainty.

Both give raw values on no fixed scale (a reward model's logit; the mean KL divergence of the policy's
next-token distribution from uniform over the response, as in label-free best-of-N and RL work). A round first
`prepare`s a task's candidates — every raw value computed in batches — and fits the task's statistics; each
score is then `sigmoid((raw - mean) / std)` in [0, 1], the statistics stored with the round (`summary`) and
restored when a resumed round gates. Without statistics a value is `sigmoid(raw)`.

torch and transformers are imported when a model is first needed, never when the daemon checks the config.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import PromptRecord

__all__ = ["PolicyRef", "RewardModelScorer", "SelfCertaintyScorer", "TaskNormaliser"]


@dataclass
class PolicyRef:
    """The policy a round generates with (base model and champion adapter), set by the round before scoring."""

    model_dir: Path | None = None
    adapter: Path | None = None


class TaskNormaliser:
    """Per-task mean and spread of raw scores, mapping a raw value into [0, 1]."""

    def __init__(self) -> None:
        self.stats: dict[str, tuple[float, float, int]] = {}

    def fit(self, task: str, raw: Sequence[float]) -> None:
        if raw:
            spread = statistics.pstdev(raw) if len(raw) > 1 else 0.0
            self.stats[task] = (statistics.fmean(raw), spread or 1.0, len(raw))

    def apply(self, task: str, raw: float) -> float:
        mean, spread, _ = self.stats.get(task, (0.0, 1.0, 0))
        z = max(-50.0, min(50.0, (raw - mean) / spread))
        return 1.0 / (1.0 + math.exp(-z))

    def summary(self) -> dict[str, dict[str, float]]:
        return {t: {"mean": m, "std": s, "n": n} for t, (m, s, n) in self.stats.items()}

    def restore(self, saved: dict[str, dict[str, float]]) -> None:
        for task, s in saved.items():
            self.stats[task] = (float(s["mean"]), float(s["std"]), int(s["n"]))


class _NormalisedScores:
    """What both model scorers share: raw values cached by (prompt, answer), computed in batches by `batch`,
    prepared per task and normalised."""

    def __init__(self, batch: Callable[[list[tuple[PromptRecord, str]]], list[float]], batch_size: int) -> None:
        self.normaliser = TaskNormaliser()
        self.raw: dict[tuple[str, str], float] = {}
        self._batch, self._batch_size = batch, max(1, batch_size)

    def prepare(self, task: str, records: Sequence[PromptRecord], responses: Sequence[Sequence[str]]) -> None:
        pairs = [(r, a) for r, answers in zip(records, responses, strict=True) for a in answers]
        self._compute(pairs)
        self.normaliser.fit(task, [self.raw[(r.prompt_hash, a)] for r, a in pairs])

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        self._compute([(record, a) for a in responses])
        return [self.normaliser.apply(record.task, self.raw[(record.prompt_hash, a)]) for a in responses]

    def _compute(self, pairs: list[tuple[PromptRecord, str]]) -> None:
        todo = list({(r.prompt_hash, a): (r, a) for r, a in pairs if (r.prompt_hash, a) not in self.raw}.values())
        for start in range(0, len(todo), self._batch_size):
            chunk = todo[start : start + self._batch_size]
            for (record, answer), value in zip(chunk, self._batch(chunk), strict=True):
                self.raw[(record.prompt_hash, answer)] = value


def _conversation(record: PromptRecord, answer: str) -> list[dict[str, str]]:
    return [*(m.as_dict() for m in record.messages), {"role": "assistant", "content": answer}]


class RewardModelScorer:
    """A local Hugging Face sequence-classification reward model (one logit: higher is better)."""

    name = "reward_model"

    def __init__(self, *, model_dir: str, batch_size: int = 8, max_length: int = 512) -> None:
        self.scores = _NormalisedScores(self._batch, batch_size)
        self.model_dir = Path(model_dir).expanduser()
        if not (self.model_dir / "config.json").is_file():
            raise ConfigurationError(f"reward model {self.model_dir} has no config.json: give a model directory")
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None

    def prepare(self, task: str, records: Sequence[PromptRecord], responses: Sequence[Sequence[str]]) -> None:
        self.scores.prepare(task, records, responses)

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        return self.scores.score(record, responses)

    def _batch(self, chunk: list[tuple[PromptRecord, str]]) -> list[float]:
        import torch

        model, tokenizer = self._load()
        texts = [tokenizer.apply_chat_template(_conversation(r, a), tokenize=False) for r, a in chunk]
        enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
        with torch.inference_mode():
            logits = model(**enc).logits
        return [float(v) for v in logits[:, 0].float()]

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
            self._model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).eval()
            self._model.config.pad_token_id = self._tokenizer.pad_token_id
        return self._model, self._tokenizer


class SelfCertaintyScorer:
    """The policy's own confidence in an answer: mean over the answer's tokens of KL(uniform || p(next token))."""

    name = "self_certainty"

    def __init__(self, *, policy: PolicyRef | None = None, batch_size: int = 8, max_length: int = 512) -> None:
        self.scores = _NormalisedScores(self._batch, batch_size)
        self.policy = policy if policy is not None else PolicyRef()
        self.max_length = max_length
        self._loaded: tuple[Path | None, Path | None] | None = None
        self._model: Any = None
        self._tokenizer: Any = None

    def prepare(self, task: str, records: Sequence[PromptRecord], responses: Sequence[Sequence[str]]) -> None:
        self.scores.prepare(task, records, responses)

    def score(self, record: PromptRecord, responses: Sequence[str]) -> list[float | None]:
        self._load()  # a changed policy clears the cached values before they are used
        return self.scores.score(record, responses)

    def _batch(self, chunk: list[tuple[PromptRecord, str]]) -> list[float]:
        import torch

        model, tokenizer = self._load()
        values = []
        for record, answer in chunk:  # one at a time: the answer's token span is exact without padding
            prompt = tokenizer.apply_chat_template(
                [m.as_dict() for m in record.messages], tokenize=False, add_generation_prompt=True
            )
            # Both sides bounded: the prompt's last max_length tokens and the answer's first.
            prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids[-self.max_length :]
            answer_ids = tokenizer(answer, add_special_tokens=False).input_ids[: self.max_length]
            if not answer_ids:
                values.append(0.0)
                continue
            ids = torch.tensor([prompt_ids + answer_ids])
            with torch.inference_mode():
                logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
            logp = torch.log_softmax(logits, dim=-1)
            vocab = logp.shape[-1]
            values.append(float((-math.log(vocab) - logp.mean(dim=-1)).mean()))
        return values

    def _load(self) -> tuple[Any, Any]:
        wanted = (self.policy.model_dir, self.policy.adapter)
        if wanted[0] is None:
            raise ConfigurationError("self_certainty scores with the round's policy model, and none was given")
        if self._loaded != wanted:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(wanted[0])
            model = AutoModelForCausalLM.from_pretrained(wanted[0])
            if wanted[1] is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, str(wanted[1]))
            self._model, self._loaded = model.eval(), wanted
            self.scores.raw.clear()  # another policy: another certainty
        return self._model, self._tokenizer

"""Candidate generation with transformers on the local machine: the CPU, or one GPU (`model.device`).

The N candidates of one prompt share its prefix, so the prompt is run through the
model once and its KV cache is copied N times before decoding; rows that reach
end-of-sequence leave the batch at once instead of decoding padding until the
longest row is done. On a 2-core CPU both matter more than anything else: see
`bench/round.py` for the ratio against a plain `model.generate` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from taoflow.connectors.generation.placement import Placement
from taoflow.connectors.protocols import Completion, Progress, SamplingConfig
from taoflow.connectors.records import Chat, Message, as_chat

__all__ = ["TransformersGenerator", "load_tokenizer", "quiet_libraries"]


def quiet_libraries() -> None:
    """The CLI draws its own progress bars; the libraries' per-file bars and notices are noise."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def load_tokenizer(model_dir: Path) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class TransformersGenerator:
    """A `Generator` over a local HF model directory, with LoRA adapters loaded on demand."""

    def __init__(
        self,
        model_dir: Path,
        *,
        batch_rows: int = 96,
        placement: Placement | None = None,
        chat_template: str | None = None,
    ) -> None:
        """`chat_template`: a template to render prompts with instead of the model's own (`model.chat_template`)."""
        quiet_libraries()
        self.chat_template = chat_template
        self.model_dir = model_dir
        self.batch_rows = batch_rows
        self.placement = placement or Placement("cpu", "float32")
        self.device = torch.device(self.placement.device)
        self.tokenizer = load_tokenizer(model_dir)
        self._base = (
            AutoModelForCausalLM.from_pretrained(model_dir, dtype=self.placement.torch_dtype()).to(self.device).eval()
        )
        self._peft: Any = None
        self._adapters: dict[str, str] = {}
        self._eos_ids = _eos_ids(self.tokenizer, self._base)

    def generate(
        self,
        conversations: Sequence[Chat | Sequence[Message]],
        sampling: SamplingConfig,
        *,
        adapter: Path | None = None,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        model = self._select(adapter)
        texts = [self._render(c) for c in conversations]
        # Similar lengths in one batch means little padding to push through the model.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        per_batch = max(1, self.batch_rows // max(1, sampling.n))
        results: list[list[Completion]] = [[] for _ in texts]
        rng = torch.Generator(device=self.device).manual_seed(sampling.seed)
        for start in range(0, len(order), per_batch):
            chunk = order[start : start + per_batch]
            with torch.inference_mode(), _adapter_disabled(self._peft, adapter is None):
                completions = self._sample(model, [texts[i] for i in chunk], sampling, rng)
            for offset, index in enumerate(chunk):
                results[index] = completions[offset * sampling.n : (offset + 1) * sampling.n]
            if progress is not None:
                progress(len(chunk))
        return results

    def close(self) -> None:
        """Drop the model (the caller returns the memory to the device: `placement.release_accelerator`)."""
        self._base = self._peft = None
        self._adapters.clear()

    def _render(self, conversation: Chat | Sequence[Message]) -> str:
        chat = as_chat(conversation)
        rendered = self.tokenizer.apply_chat_template(
            chat.template_messages(),
            tools=chat.template_tools(),
            chat_template=self.chat_template,
            tokenize=False,
            add_generation_prompt=True,
        )
        return str(rendered)

    def _select(self, adapter: Path | None) -> Any:
        if adapter is None:
            return self._peft if self._peft is not None else self._base
        from peft import PeftModel

        key = str(adapter.resolve())
        if key not in self._adapters:
            name = f"a{len(self._adapters)}"
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self._base, key, adapter_name=name).eval()
            else:
                self._peft.load_adapter(key, adapter_name=name)
            self._adapters[key] = name
        self._peft.set_adapter(self._adapters[key])
        return self._peft

    def _sample(self, model: Any, texts: list[str], sampling: SamplingConfig, rng: torch.Generator) -> list[Completion]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        mask = enc.attention_mask
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = model(
            input_ids=enc.input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        cache, logits = out.past_key_values, out.logits[:, -1]
        n = sampling.n
        if n > 1:
            cache.batch_repeat_interleave(n)
            mask, logits = mask.repeat_interleave(n, 0), logits.repeat_interleave(n, 0)
            positions = positions.repeat_interleave(n, 0)
        last_pos = positions[:, -1]
        rows = torch.arange(mask.shape[0], device=self.device)
        tokens: list[list[int]] = [[] for _ in range(mask.shape[0])]
        finished = [False] * mask.shape[0]
        for step in range(sampling.max_new_tokens):
            chosen = _pick(logits, sampling, rng)
            live = []
            for slot, (row, token) in enumerate(zip(rows.tolist(), chosen.tolist(), strict=True)):
                if token in self._eos_ids:
                    finished[row] = True
                else:
                    tokens[row].append(token)
                    live.append(slot)
            if not live or step == sampling.max_new_tokens - 1:
                break
            if len(live) < len(rows):
                keep = torch.tensor(live, device=self.device)
                cache.batch_select_indices(keep)
                rows, mask, last_pos, chosen = rows[keep], mask[keep], last_pos[keep], chosen[keep]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            last_pos = last_pos + 1
            out = model(
                input_ids=chosen[:, None],
                attention_mask=mask,
                position_ids=last_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            cache, logits = out.past_key_values, out.logits[:, -1]
        return [
            Completion(
                text=self.tokenizer.decode(t, skip_special_tokens=True).strip(),
                num_tokens=len(t) + (1 if done else 0),
                finished=done,
            )
            for t, done in zip(tokens, finished, strict=True)
        ]


def _pick(logits: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator) -> torch.Tensor:
    if sampling.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_probs, sorted_idx = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > sampling.top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, sorted_idx, sorted_probs)
    return torch.multinomial(probs, 1, generator=rng).squeeze(-1)


def _eos_ids(tokenizer: Any, model: Any) -> frozenset[int]:
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return frozenset(i for i in ids if i is not None)


class _adapter_disabled:
    """Runs the shared PEFT model as the plain base model inside the block, when asked."""

    def __init__(self, peft_model: Any, disable: bool) -> None:
        self._ctx = peft_model.disable_adapter() if (peft_model is not None and disable) else None

    def __enter__(self) -> None:
        if self._ctx is not None:
            self._ctx.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)

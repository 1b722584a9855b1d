"""A reward model built from the real small model, for the tests and benches that need one: a sequence-
classification head trained (Bradley-Terry) on (prompt, chosen, rejected) pairs. The body stays frozen, so each
answer's last-token features are computed once and the head learns on them (a linear probe: seconds on CPU,
where fine-tuning the body takes minutes)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["train_reward_head"]

#: (the prompt's chat messages, the preferred answer, the dispreferred one)
Pair = tuple[list[dict[str, str]], str, str]


def train_reward_head(base: Path, directory: Path, pairs: list[Pair], *, steps: int = 300) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "left"  # the last position is every row's last token
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id

    def features(rows: list[tuple[list[dict[str, str]], str]]) -> torch.Tensor:
        texts = [
            tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": answer}], tokenize=False)
            for messages, answer in rows
        ]
        with torch.inference_mode():
            hidden = model.model(**tokenizer(texts, return_tensors="pt", padding=True)).last_hidden_state
        return hidden[:, -1].clone()

    chosen, rejected = [], []
    for start in range(0, len(pairs), 32):
        chunk = pairs[start : start + 32]
        chosen.append(features([(m, good) for m, good, _ in chunk]))
        rejected.append(features([(m, bad) for m, _, bad in chunk]))
    good, bad = torch.cat(chosen), torch.cat(rejected)
    head = model.score
    head.weight.data.normal_(0.0, 0.01)
    optimiser = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        loss = -torch.nn.functional.logsigmoid(head(good)[:, 0] - head(bad)[:, 0]).mean()
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.eval().save_pretrained(directory)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(directory)
    return directory

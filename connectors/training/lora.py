"""LoRA training with TRL and PEFT: best-of-N distillation (SFT), DPO, and GRPO.

The round hands over plain examples; this module turns them into TRL datasets,
trains a LoRA adapter on the base model and writes it in PEFT format (what vLLM's
runtime LoRA API loads). Checkpoints go to `work_dir`, so a round interrupted in
training resumes from the last one instead of starting over.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from taoflow.connectors.errors import RoundError
from taoflow.connectors.protocols import Progress
from taoflow.connectors.records import Message, PromptRecord, Tool
from taoflow.connectors.training.grpo import RewardFunction, grpo_trainer

__all__ = [
    "DistillExample",
    "PreferenceExample",
    "PromptExample",
    "RewardFunction",
    "TrainingConfig",
    "TrainingResult",
    "train_adapter",
]

Objective = Literal["sft", "dpo", "grpo"]


@dataclass(frozen=True)
class DistillExample:
    """A prompt and the answer to imitate (the best candidate)."""

    messages: tuple[Message, ...]
    completion: str
    tools: tuple[Tool, ...] = ()


@dataclass(frozen=True)
class PreferenceExample:
    """A prompt with a preferred and a dispreferred answer."""

    messages: tuple[Message, ...]
    chosen: str
    rejected: str
    tools: tuple[Tool, ...] = ()


@dataclass(frozen=True)
class PromptExample:
    """A prompt GRPO generates for and rewards with the task's scorers (the record says which task)."""

    record: PromptRecord


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of one adapter training run (mirrors the `train` settings section)."""

    objective: Objective = "sft"
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    learning_rate: float = 1e-3
    epochs: float = 3.0
    batch_size: int = 16
    gradient_accumulation: int = 1
    max_length: int = 256
    dpo_beta: float = 0.1
    seed: int = 0
    save_steps: int = 20
    # Where and in which precision (a resolved `Placement`): bfloat16/float16 load the base weights in that dtype and
    # train with mixed precision, the LoRA weights kept in float32.
    device: str = "cpu"
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    grpo_generations: int = 4
    grpo_max_completion_tokens: int = 48
    grpo_temperature: float = 0.8
    grpo_beta: float = 0.0
    # Continue this adapter's weights (the champion's: successive rounds accumulate) instead of a fresh LoRA; its
    # own rank and target modules are kept.
    init_adapter: Path | None = None
    # A chat template to render examples with instead of the model's own (`model.chat_template`).
    chat_template: str | None = None


@dataclass(frozen=True)
class TrainingResult:
    adapter_dir: Path
    steps: int
    samples_seen: int
    seconds: float
    final_loss: float | None
    resumed_from: str | None = None
    log: list[dict[str, float]] = field(default_factory=list)
    #: Examples left out because their answer lay past max_length.
    too_long: int = 0

    @property
    def tokens(self) -> int:
        """Tokens the trainer fed the model (its cumulative `num_tokens` metric; 0 where it keeps none)."""
        return int(max((e["num_tokens"] for e in self.log if "num_tokens" in e), default=0))

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.seconds if self.seconds > 0 else 0.0


Examples = Sequence[DistillExample] | Sequence[PreferenceExample] | Sequence[PromptExample]


def train_adapter(
    base_model_dir: Path,
    examples: Examples,
    config: TrainingConfig,
    *,
    work_dir: Path,
    progress: Progress | None = None,
    reward: RewardFunction | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainingResult:
    """Train a LoRA adapter; the adapter lands in `work_dir / "adapter"`. GRPO needs `reward`. `callbacks`:
    more `TrainerCallback`s (a cluster's worker reports its checkpoints through one)."""
    if not examples:
        raise RoundError("no training examples passed the selection; nothing to train")
    if config.objective == "grpo" and reward is None:
        raise RoundError("GRPO needs a reward function (the task's scorers)")
    import torch
    from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback

    from taoflow.connectors.generation.local import load_tokenizer, quiet_libraries

    quiet_libraries()

    torch.manual_seed(config.seed)
    if config.device.startswith("cuda:") and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(int(config.device.partition(":")[2]))  # the Trainer takes the current GPU
    tokenizer = load_tokenizer(base_model_dir)
    tokenizer.padding_side = "right"
    if config.chat_template is not None:
        tokenizer.chat_template = config.chat_template
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=getattr(torch, config.dtype))
    lora = _lora(config)
    if config.init_adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(config.init_adapter), is_trainable=True)
        lora = None  # the trainers train the adapter the model carries
    checkpoints = work_dir / "checkpoints"
    resume = _latest_checkpoint(checkpoints)
    if config.objective == "grpo" and reward is not None:
        trainer = grpo_trainer(
            model,
            tokenizer,
            [e.record for e in examples if isinstance(e, PromptExample)],
            trainer_arguments(config, checkpoints),
            batch_size=config.batch_size,
            generations=config.grpo_generations,
            max_completion_tokens=config.grpo_max_completion_tokens,
            temperature=config.grpo_temperature,
            beta=config.grpo_beta,
            reward=reward,
            lora=lora,
        )
    else:
        trainer = _build_trainer(model, tokenizer, examples, config, checkpoints, lora)
    # The SFT trainer drops an example whose answer lies wholly past max_length (a long agent prompt: tools, turns):
    # counted, and an error when it leaves nothing, rather than a round that silently trained on less.
    too_long = len(examples) - len(trainer.train_dataset)
    if too_long >= len(examples):
        raise RoundError(
            f"all {len(examples)} training examples are longer than train.max_length ({config.max_length} tokens) "
            "with their answer; raise train.max_length (agent prompts with tools need 1024 or more)"
        )

    class _Progress(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if progress is not None:
                progress(1)

    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; we return the log instead
    trainer.add_callback(_Progress())
    for callback in callbacks:
        trainer.add_callback(callback)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    adapter_dir = work_dir / "adapter"
    _save_adapter(trainer, adapter_dir)
    log = [{k: float(v) for k, v in entry.items() if isinstance(v, int | float)} for entry in trainer.state.log_history]
    losses = [e["loss"] for e in log if "loss" in e]
    done_before = _steps_of(resume)
    steps = int(output.global_step)
    per_step = trainer.args.per_device_train_batch_size * config.gradient_accumulation * trainer.args.world_size
    return TrainingResult(
        adapter_dir=adapter_dir,
        steps=steps,
        samples_seen=max(0, steps - done_before) * per_step,
        seconds=seconds,
        final_loss=losses[-1] if losses else None,
        resumed_from=str(resume) if resume else None,
        log=log,
        too_long=too_long,
    )


def _save_adapter(trainer: Any, adapter_dir: Path) -> None:
    """The adapter in PEFT format, written once: by the only process, or the first of several (FSDP gathers the
    sharded weights on every process first)."""
    state_dict = None
    if getattr(trainer, "is_fsdp_enabled", False):
        state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    if trainer.accelerator.is_main_process:
        trainer.model.save_pretrained(adapter_dir, state_dict=state_dict)
    trainer.accelerator.wait_for_everyone()


def _build_trainer(
    model: Any,
    tokenizer: Any,
    examples: Examples,
    config: TrainingConfig,
    output_dir: Path,
    lora: Any,
) -> Any:
    """`lora`: a fresh adapter's configuration, or None when `model` carries the adapter to train (a warm start)."""
    from datasets import Dataset

    common: dict[str, Any] = {
        **trainer_arguments(config, output_dir),
        "per_device_train_batch_size": config.batch_size,
        "max_length": config.max_length,
    }
    if config.objective == "sft":
        from trl import SFTConfig, SFTTrainer

        rows = [
            {
                "prompt": [m.as_dict() for m in e.messages],
                "completion": [{"role": "assistant", "content": e.completion}],
                "tools": _tools_column(e.tools),
            }
            for e in examples
            if isinstance(e, DistillExample)
        ]
        return SFTTrainer(
            model=model,
            args=SFTConfig(**common, completion_only_loss=True),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora,
        )
    from trl import DPOConfig, DPOTrainer

    rows = [
        {
            "prompt": [m.as_dict() for m in e.messages],
            "chosen": [{"role": "assistant", "content": e.chosen}],
            "rejected": [{"role": "assistant", "content": e.rejected}],
            "tools": _tools_column(e.tools),
        }
        for e in examples
        if isinstance(e, PreferenceExample)
    ]
    return DPOTrainer(
        model=model,
        args=DPOConfig(**common, beta=config.dpo_beta),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
    )


def _tools_column(tools: Sequence[Tool]) -> str | None:
    """A prompt's tools as TRL reads them (its trainers pass them to the chat template): JSON text, since the
    schemas of different requests' tools have no one columnar type."""
    return json.dumps([t.as_dict() for t in tools]) if tools else None


def _lora(config: TrainingConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )


def trainer_arguments(config: TrainingConfig, output_dir: Path) -> dict[str, Any]:
    """The arguments every objective's trainer shares."""
    return {
        "output_dir": str(output_dir),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.epochs,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 2,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": 1,
        "seed": config.seed,
        "report_to": [],
        # Set explicitly: TRL defaults to bf16 autocast and activation checkpointing, which on CPUs without bf16
        # units is ~100x slower, and a 135M model needs no checkpointing anywhere.
        "bf16": config.dtype == "bfloat16",
        "fp16": config.dtype == "float16",
        "gradient_checkpointing": config.gradient_checkpointing,
        # Non-reentrant checkpointing needs no gradient on the (frozen) inputs of a LoRA model.
        "gradient_checkpointing_kwargs": {"use_reentrant": False} if config.gradient_checkpointing else None,
        # The Trainer places the model itself: on the CPU only when asked (a GPU machine told model.device: cpu).
        "use_cpu": config.device == "cpu",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": False,
    }


def _latest_checkpoint(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    found = [p for p in directory.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(found, key=lambda p: _steps_of(p), default=None)


def _steps_of(checkpoint: Path | None) -> int:
    if checkpoint is None:
        return 0
    try:
        return int(checkpoint.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0

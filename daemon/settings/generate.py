"""Candidate generation: the backend, the test-time compute budget, sampling, prompts tried again."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from taoflow.daemon.settings.base import Section

__all__ = ["GenerateSettings", "VllmEngineSettings"]


class VllmEngineSettings(Section):
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=0.98)
    """Share of each GPU's memory the engine takes for weights and KV cache (freed before training)."""
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    """GPUs one engine shards the model over (the GPUs the round process sees: CUDA_VISIBLE_DEVICES)."""
    max_model_len: int | None = Field(None, ge=128)
    """Longest prompt plus answer the engine plans for; None takes the model's (a smaller one saves KV cache)."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of a shared prefix (the n candidates of a prompt, the gate's system prompts)."""
    max_lora_rank: int = Field(0, ge=0, le=512)
    """Largest LoRA rank the engine accepts; 0: train.lora_rank rounded up to one vLLM supports."""
    enforce_eager: bool = False
    """Skip CUDA graph capture (faster start, slower decoding): for debugging."""


class GenerateSettings(Section):
    backend: Literal["transformers", "vllm", "fleet"] = "transformers"
    """`transformers` runs on the local CPU/GPU; `vllm` uses vLLM's offline engine; `fleet` asks the serving fleet."""
    n: int = Field(8, ge=1, le=256)
    """Candidates sampled per prompt (the test-time compute budget, with max_prompts)."""
    max_prompts: int = Field(256, ge=1)
    """Most training prompts a round generates for (newest first, spread across tasks)."""
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    """Sampling temperature for candidates (evaluation is always greedy)."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass for candidates."""
    max_new_tokens: int = Field(96, ge=1)
    """Longest candidate; a cut-off candidate is never used as a training target."""
    batch_rows: int = Field(96, ge=1)
    """Sequences decoded together by the local backend (prompts x n)."""
    seed: int = 0
    """Sampling seed, for reproducible rounds."""
    retry_unsolved: int = Field(2, ge=0, le=16)
    """A prompt in which a round found nothing to learn (no candidate passed train.selection) is not consumed: up to
    this many later rounds try it again, with the champion they run and retry_n candidates, before new prompts (at
    most half a round while new ones wait). It counts as new for retrain policies. 0: every prompt is tried once."""
    retry_n: int = Field(0, ge=0, le=256)
    """Candidates sampled for a prompt being tried again; 0: twice n (at most 256)."""
    vllm: VllmEngineSettings = VllmEngineSettings()
    """The `vllm` backend's engine: one per round process, for candidates and the gate's evaluation."""

    @property
    def retry_candidates(self) -> int:
        """Candidates sampled for a prompt tried again: retry_n, or twice n (at most 256)."""
        return self.retry_n or min(2 * self.n, 256)

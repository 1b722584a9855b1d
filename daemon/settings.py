"""The one settings tree: a section per stage, read from a YAML file and `TAOFLOW_` variables.

Precedence, highest first: explicit overrides, environment (`TAOFLOW_GENERATE__N=8`;
`__` nests), the YAML file, the defaults below. This is the only module that reads
the environment; everything else receives the values it needs as arguments.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC
from pathlib import Path
from typing import Any, Literal, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.sources.redaction import REDACTION_KINDS

__all__ = [
    "MIN_TOKEN_LENGTH",
    "FleetSettings",
    "ScorerSpec",
    "Settings",
    "admin_token",
    "gateway_token",
    "load_settings",
    "metrics_token",
    "ray_runner_problems",
    "ray_token",
    "reference_table",
]


ENV_PREFIX = "TAOFLOW_"

log = logging.getLogger(__name__)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)


class RetentionSettings(_Section):
    """What the state database lets go of (store/retention.py), so its file stays bounded under a steady stream."""

    consumed_days: float | None = Field(30.0, gt=0)
    """Prompts rounds consumed longer ago lose their text (request id, hash, task and round stay); unset: kept."""
    dead_letter_days: float | None = Field(30.0, gt=0)
    """Dead letters older than this are deleted; unset: kept."""
    dead_letter_max: int | None = Field(100_000, ge=0)
    """Most dead letters kept (the oldest go first); unset: no cap."""
    interval_seconds: float = Field(600.0, gt=0)
    """How often the daemon applies retention (and gives freed pages back to the file system)."""


class StorageSettings(_Section):
    state_dir: Path = Path(".taoflow")
    """Directory for the buffer/registry database, adapters and round work files."""
    database: str = "taoflow.db"
    """SQLite file name inside state_dir (WAL mode; holds prompts, dead letters, registry, rounds)."""
    artifacts_uri: str | None = Field(None, pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
    """Adapter store: unset keeps adapters in state_dir/adapters; `s3://bucket/prefix` keeps them in S3."""
    artifacts_endpoint_url: str | None = None
    """S3-compatible endpoint of artifacts_uri (MinIO, Ceph, ...); unset for AWS. Credentials: the AWS chain."""
    artifacts_region: str | None = None
    """AWS region of the artifacts bucket."""
    retention: RetentionSettings = RetentionSettings()
    """What the database lets go of over time."""


class KafkaSettings(_Section):
    bootstrap_servers: list[str] = Field(default_factory=lambda: ["localhost:9092"])
    """Kafka (or Redpanda, MSK, Confluent) bootstrap servers, host:port."""
    topics: list[str] = Field(default_factory=list)
    """Topics to consume (or use topic_pattern)."""
    topic_pattern: str | None = None
    """Regular expression of topics to consume, instead of a fixed list."""
    group_id: str = "taoflow"
    """Consumer group; committed offsets belong to it."""
    field_map: dict[str, str] = Field(default_factory=dict)
    """Dotted paths for other record shapes: request_id, task, messages, prompt, response, timestamp, status_code."""
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """Passed to the client unchanged."""
    sasl_mechanism: str | None = None
    """e.g. PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (with a SASL security_protocol)."""
    sasl_username: str | None = None
    """SASL user name."""
    sasl_password: SecretStr | None = None
    """SASL password; set it through TAOFLOW_SOURCE__KAFKA__SASL_PASSWORD from a secret, never in a file."""
    ssl_cafile: Path | None = None
    """CA bundle for SSL."""
    ssl_certfile: Path | None = None
    """Client certificate for mutual TLS."""
    ssl_keyfile: Path | None = None
    """Client key for mutual TLS."""
    max_poll_records: int = Field(500, ge=1)
    """Records per poll; each poll is written to the buffer in one transaction, then committed."""
    poll_timeout_seconds: float = Field(1.0, gt=0)
    """How long one poll waits for records."""
    session_timeout_ms: int = Field(10_000, ge=1000)
    """Group session timeout."""
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    """Group heartbeat interval."""
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    """Longest gap between polls before the group evicts this member (also the JoinGroup timeout)."""
    bootstrap_timeout_ms: int = Field(10_000, ge=100)
    """How long connecting to the brokers may take before the attempt counts as an outage (retried with backoff)."""


class S3Settings(_Section):
    bucket: str = ""
    """Bucket holding the inference table's files."""
    prefix: str = ""
    """Key prefix to watch, e.g. the table's directory."""
    endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, Ceph, ...); unset for AWS. Credentials come from the AWS chain."""
    region: str | None = None
    """AWS region of the bucket."""
    order: Literal["key", "last_modified"] = "key"
    """Order in which new objects are ingested."""
    poll_interval_seconds: float = Field(30.0, gt=0)
    """Pause between listings of the prefix when following."""
    field_map: dict[str, str] = Field(default_factory=dict)
    """Dotted paths for other record shapes, as for Kafka."""
    prefetch: int = Field(4, ge=1)
    """Objects downloaded and parsed ahead of the one being stored."""
    parse_processes: int | None = Field(None, ge=0)
    """Worker processes parsing downloaded objects; 0 parses on the download threads; unset: one per usable CPU."""


class DeltaSettings(_Section):
    table_uri: str = ""
    """The Delta table (a Databricks inference table): `s3://bucket/path`, a local directory, or a Unity Catalog
    name `uc://catalog.schema.table` (with its workspace URL and token in storage_options)."""
    endpoint_url: str | None = None
    """S3-compatible endpoint (MinIO, Ceph, ...); unset for AWS. Credentials come from the AWS chain."""
    region: str | None = None
    """AWS region of the table's bucket."""
    storage_options: dict[str, SecretStr] = Field(default_factory=dict)
    """More options for deltalake's storage (e.g. DATABRICKS_WORKSPACE_URL, DATABRICKS_ACCESS_TOKEN), kept
    secret: set them through TAOFLOW_SOURCE__DELTA__STORAGE_OPTIONS__<NAME> from a secret, never in a file."""
    start_version: int | None = Field(None, ge=0)
    """First start: read the table's versions from this one on, instead of the current snapshot."""
    start_timestamp: str | None = None
    """First start: read the versions committed at or after this ISO 8601 time, instead of the snapshot."""
    poll_interval_seconds: float = Field(30.0, gt=0)
    """Pause between reads of the table's log when caught up."""
    max_versions_per_poll: int = Field(100, ge=1)
    """Most versions one poll reads (a long backlog is read in steps, each checkpointed)."""
    field_map: dict[str, str] = Field(default_factory=dict)
    """Dotted paths for other row shapes, as for Kafka (column names are the first part)."""
    prefetch: int = Field(4, ge=1)
    """Data files downloaded and parsed ahead of the one being stored."""
    parse_processes: int | None = Field(None, ge=0)
    """Worker processes parsing data files; 0 parses on the download threads; unset: one per usable CPU."""


class SourceSettings(_Section):
    kind: Literal["jsonl", "kafka", "s3", "delta"] = "jsonl"
    """Where prompts come from: `jsonl` files, a `kafka` consumer group, `s3` objects, or a `delta` table (a
    Databricks inference table, read through its log: versions, compaction and deletes as the table says)."""
    paths: list[Path] = Field(default_factory=list)
    """jsonl: files or directories (every *.jsonl and *.jsonl.gz inside) to ingest; relative to the config file."""
    kafka: KafkaSettings = KafkaSettings()
    """kafka: the consumer group."""
    s3: S3Settings = S3Settings()
    """s3: the bucket and prefix."""
    delta: DeltaSettings = DeltaSettings()
    """delta: the table."""


class IngestSettings(_Section):
    default_task: str = "default"
    """Task name for records that carry no task, endpoint or model name."""
    redact: list[str] = Field(default_factory=list)
    """Redact before storing: any of `secrets`, `emails`, `phones`."""
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    """Share of each task's distinct prompts held out for the eval gate (never trained on)."""
    heldout_max_per_task: int = Field(64, ge=0)
    """Cap on held-out prompts per task; once reached, new prompts all go to training."""
    max_prompt_chars: int = Field(16_000, gt=0)
    """Longer prompts are skipped (counted as `too_long`) instead of buffered."""
    keep_status: list[int] = Field(default_factory=lambda: [200])
    """Only records whose logged status_code is one of these are buffered ([] keeps all)."""
    sample_rates: dict[str, float] = Field(default_factory=dict)
    """Share of each high-volume task to keep, e.g. {support: 0.1}; by request-id hash, so replays agree."""
    task_map: dict[str, str] = Field(default_factory=dict)
    """Rename tasks: served entity / endpoint / model name -> task name."""
    buffer_cap: int = Field(100_000, ge=1)
    """Most untrained prompts to hold (held-out ones aside); past it, `overflow` decides."""
    overflow: Literal["evict_oldest", "reservoir", "pause"] = "evict_oldest"
    """At the cap: keep each task's newest prompts (evict_oldest), a uniform sample of them (reservoir), or pause."""
    task_quotas: dict[str, int] = Field(default_factory=dict)
    """Most untrained prompts per task, below its equal share of buffer_cap (a loud task cannot crowd others out)."""

    @field_validator("redact")
    @classmethod
    def _known_kinds(cls, value: list[str]) -> list[str]:
        unknown = set(value) - set(REDACTION_KINDS)
        if unknown:
            raise ValueError(f"unknown redaction kinds {sorted(unknown)}; choose from {list(REDACTION_KINDS)}")
        return value


class ModelSettings(_Section):
    base: str = "smollm2-135m-instruct"
    """Base model: a built-in name (`smollm2-135m-instruct`) or a local HF model directory."""
    cache_dir: Path = Path("~/.cache/taoflow/models")
    """Where built-in models are converted to HF format once and reused."""
    served_name: str = Field("taoflow", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    """The name the adapter lineage is registered (and later served) under."""
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:[0-9]{1,2})$")
    """Where the round's generation, gate evaluation and training run: `auto` (the first GPU torch sees, else the
    CPU), `cpu`, `cuda` or `cuda:N`. A GPU the machine lacks is an error, never a silent fall back to the CPU."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights' precision: `auto` is bfloat16 on GPUs that support it, float32 on the CPU (where bfloat16 kernels
    are slower). Training in bfloat16/float16 keeps the LoRA weights in float32 (mixed precision)."""


class VllmEngineSettings(_Section):
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


class GenerateSettings(_Section):
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


class ScorerSpec(_Section):
    type: Literal[
        "arithmetic",
        "json_schema",
        "regex",
        "sql",
        "python",
        "self_consistency",
        "length",
        "judge",
        "reward_model",
        "self_certainty",
    ]
    """Scorer kind. `judge` (an LLM judge over an OpenAI-compatible endpoint), `reward_model` (a local
    sequence-classification model) and `self_certainty` (the policy's own confidence) run in the round's process;
    the verifiers run in the sandbox."""
    weight: float = Field(1.0, gt=0.0)
    """Weight in the composite (weights are normalised over the scorers that answered)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Scorer parameters, e.g. `schema` for json_schema, `pattern` for regex, `callable` for python."""


class SandboxSettings(_Section):
    """Where scorers run: a worker process with a deadline and a memory cap, no writes, no network."""

    enabled: bool = True
    """Score in a confined, killable worker (off: in the round's own process, only for trusted output)."""
    seconds_per_candidate: float = Field(2.0, gt=0)
    """Seconds per answer to score a prompt's answers; past that the worker is killed and they stay unscored."""
    memory_mb: int = Field(1024, ge=64)
    """Address-space cap of a scoring worker (an allocation past it fails inside the worker)."""


class ScoreSettings(_Section):
    tasks: dict[str, list[ScorerSpec]] = Field(default_factory=dict)
    """Scorers per task name."""
    default: list[ScorerSpec] = Field(default_factory=lambda: [ScorerSpec(type="self_consistency")])
    """Scorers for tasks not listed in `tasks`."""
    sandbox: SandboxSettings = SandboxSettings()
    """Limits on scoring model output (time, memory, side effects)."""


class TrainSettings(_Section):
    objective: Literal["sft", "dpo", "grpo"] = "sft"
    """`sft`: best-of-N distillation; `dpo`: preference pairs of best and worst candidates; `grpo`: the policy
    samples grpo_generations answers per prompt while it trains, rewarded by the task's scorers (prompts whose
    round candidates all scored alike are left out: their group advantage is zero)."""
    selection: Literal["threshold", "relative"] = "threshold"
    """Which candidates are worth learning from. `threshold`: those scoring at least score_threshold (verifiers
    that score 0 or 1); `relative`: those beating their prompt's group mean by relative_margin and scoring at least
    score_floor (a judge or a reward model, whose continuous scores rarely reach a fixed bar)."""
    score_threshold: float = Field(0.99, ge=0.0, le=1.0)
    """`threshold` selection: SFT trains on candidates scoring at least this; DPO's chosen answer must too."""
    relative_margin: float = Field(0.1, ge=0.0, le=1.0)
    """`relative` selection: how far above its group's mean score a candidate must be to be imitated."""
    score_floor: float = Field(0.0, ge=0.0, le=1.0)
    """`relative` selection: the least absolute score a kept candidate (or DPO's chosen answer) must have."""
    targets_per_prompt: int = Field(2, ge=1)
    """SFT: distinct top candidates used per prompt."""
    dpo_margin: float = Field(0.5, ge=0.0, le=1.0)
    """DPO: the best candidate must beat the worst by this much to form a pair."""
    dpo_beta: float = Field(0.1, gt=0.0)
    """DPO: KL strength."""
    grpo_generations: int = Field(4, ge=2, le=64)
    """GRPO: answers sampled per prompt at each step (the group its advantages are relative to)."""
    grpo_max_completion_tokens: int = Field(48, ge=1)
    """GRPO: longest sampled answer."""
    grpo_temperature: float = Field(0.8, gt=0.0)
    """GRPO: sampling temperature during training."""
    grpo_beta: float = Field(0.0, ge=0.0)
    """GRPO: KL penalty against the base model (0 loads no reference model)."""
    lora_rank: int = Field(16, ge=1, le=256)
    """LoRA rank (vLLM servers must allow at least this with --max-lora-rank)."""
    lora_alpha: int = Field(32, ge=1)
    """LoRA scaling numerator."""
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """LoRA dropout."""
    learning_rate: float = Field(1e-3, gt=0.0)
    """Peak learning rate (cosine decay)."""
    epochs: float = Field(3.0, gt=0.0)
    """Passes over the selected examples."""
    batch_size: int = Field(16, ge=1)
    """Examples per optimiser step (per device)."""
    max_length: int = Field(256, ge=16)
    """Prompt plus answer tokens; longer examples are truncated."""
    save_steps: int = Field(20, ge=1)
    """Checkpoint interval in optimiser steps (an interrupted round resumes from the last)."""
    seed: int = 0
    """Training seed."""
    gradient_accumulation: int = Field(1, ge=1, le=1024)
    """Micro-batches of batch_size per optimiser step (a larger effective batch in the same memory)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass instead of keeping them: less memory, ~30% more compute."""
    num_processes: int = Field(0, ge=0, le=1024)
    """Training processes (data parallel, through `accelerate launch`): 0 is one per visible GPU (one on the CPU);
    more than one on a CPU runs gloo processes, which is how the launch path is tested."""
    fsdp: bool = False
    """With several processes, shard weights, gradients and optimiser state (FSDP) instead of copying them: for
    models that do not fit one GPU."""
    replay: int = Field(64, ge=0, le=100_000)
    """Examples of the rounds behind the champion (its round's, then its parent's, ...) trained on again beside the
    round's own, a seeded sample when there are more: a round with a few new examples does not pull the adapter
    towards those alone. 0: a round trains on its own examples only."""
    init: Literal["champion", "base"] = "champion"
    """Where a round's adapter starts: `champion` continues the champion adapter's weights (its rank and target
    modules kept), so successive rounds on new prompts accumulate; `base` trains a fresh adapter each round. With no
    champion yet, a fresh one. (DPO's reference model is the base model either way.)"""


class GateSettings(_Section):
    min_mean_improvement: float = 0.0
    """Candidate's mean held-out score must beat the champion's by at least this."""
    max_slice_regression: float = Field(0.05, ge=0.0)
    """No task's mean may drop by more than this."""
    min_samples: int = Field(16, ge=1)
    """Fewest held-out prompts (all tasks) for a decision; fewer rejects the candidate."""
    min_slice_samples: int = Field(4, ge=1)
    """Tasks with fewer held-out prompts are not judged for regression (too noisy)."""
    max_new_tokens: int = Field(96, ge=1)
    """Longest greedy answer during evaluation."""
    golden_file: Path | None = None
    """Optional labelled JSONL (`messages`, `task`, `expected`) checked the same way; relative to the config file."""
    confidence: float = Field(0.9, ge=0.0, lt=1.0)
    """Pass only when the improvement clears min_mean_improvement beyond noise at this confidence: the bootstrap
    lower bound of the paired mean change, and (for a minimum of 0 or more) a sign test over the prompts that
    changed. 0 judges the means alone."""
    bootstrap_samples: int = Field(2000, ge=100, le=100_000)
    """Resamples of the held-out prompts for the confidence bound (seeded: the same scores give the same decision)."""
    scorers: dict[str, list[ScorerSpec]] = Field(default_factory=dict)
    """Per task, scorers the gate judges with instead of the training ones (e.g. a stronger judge, or the
    verifiers): a policy trained against one scorer can raise its score while an independent one falls. The round's
    gate table shows both."""


class RetrainSettings(_Section):
    """When the daemon starts a round (policies/retrain.py decides; reloaded from the file without restart)."""

    min_new_prompts: int = Field(100, ge=1)
    """New (never trained on) prompts a round needs: in all tasks together, or per task in per_task mode."""
    mode: Literal["multi_task", "per_task"] = "multi_task"
    """multi_task: one round over every task; per_task: a round over the tasks that each have min_new_prompts."""
    interval_seconds: float | None = Field(None, gt=0)
    """If set, a round is due only once this long has passed since the last one started."""
    cron: str | None = None
    """If set (5-field crontab, UTC), a round is due once per window opened since the last round, e.g. `0 2 * * *`."""
    cooldown_seconds: float = Field(3600.0, ge=0)
    """Quiet time after a round ends, whatever else says."""
    max_staleness_seconds: float | None = Field(None, gt=0)
    """If set, run anyway once the last round is this old and staleness_min_prompts new prompts wait."""
    staleness_min_prompts: int = Field(10, ge=1)
    """New prompts the staleness rule needs."""
    budget_samples: int | None = Field(None, ge=1)
    """Tuning compute per round in prompts x samples: a round takes at most budget_samples // generate.n prompts."""
    max_consecutive_rejections: int = Field(3, ge=1)
    """Gate rejections in a row after which the policy backs off (cooldown becomes backoff_seconds) and alerts."""
    backoff_seconds: float = Field(86400.0, ge=0)
    """Cooldown while backed off; a manual trigger or `resume` clears the back-off."""
    paused: bool = False
    """Start paused (no automatic rounds); the admin API pauses and resumes at runtime."""
    evaluate_interval_seconds: float = Field(30.0, gt=0)
    """How often the scheduler asks the policy."""

    @field_validator("cron")
    @classmethod
    def _crontab(cls, value: str | None) -> str | None:
        """Parsed by the scheduler's own cron parser, so what loads is what the scheduler runs."""
        if value is None:
            return value
        if len(value.split()) != 5:
            raise ValueError("cron must have 5 fields: minute hour day month weekday (UTC)")
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid crontab (minute hour day month weekday, UTC): {exc}") from None
        return value


class DaemonSettings(_Section):
    """The long-running service: admin API, supervision, single-flight rounds."""

    admin_host: str = "127.0.0.1"
    """Address the admin API listens on (0.0.0.0 in a pod)."""
    admin_port: int = Field(8470, ge=0, le=65535)
    """Port of the admin API (also serves /metrics, /healthz, /readyz); 0 picks a free one."""
    admin_token: SecretStr | None = None
    """Bearer token for the admin API (set TAOFLOW_DAEMON__ADMIN_TOKEN or admin_token_file); required by `run`."""
    admin_token_file: Path | None = None
    """File holding the admin token (a mounted secret); used when admin_token is unset."""
    metrics_token: SecretStr | None = None
    """A read-only token that may only GET /metrics (for the scraper; TAOFLOW_DAEMON__METRICS_TOKEN)."""
    metrics_token_file: Path | None = None
    """File holding the metrics token (a mounted secret); used when metrics_token is unset."""
    gateway_token: SecretStr | None = None
    """A token that may only read the route table and report in-flight requests (what `taoflow gateway` holds;
    TAOFLOW_DAEMON__GATEWAY_TOKEN); the gateway presents it, the daemon accepts it on /v1/routes."""
    gateway_token_file: Path | None = None
    """File holding the gateway token (a mounted secret); used when gateway_token is unset."""
    admin_url: str | None = None
    """Where `taoflow status|pause|resume|trigger` reach the daemon; default http://admin_host:admin_port."""
    round_timeout_seconds: float | None = Field(43200.0, gt=0)
    """A round still running after this long is stopped at its next checkpoint (resumed, then failed if it keeps on)."""
    drain_seconds: float = Field(60.0, ge=0)
    """On SIGTERM: how long a running round may take to stop at its next checkpoint before it is killed."""
    lock_stale_seconds: float = Field(120.0, gt=0)
    """A round lock whose holder has not renewed it for this long (or whose process is gone) is taken over."""
    max_restarts: int = Field(5, ge=0)
    """A supervised task failing more often than this within restart_window_seconds stops the daemon (exit 1)."""
    restart_window_seconds: float = Field(300.0, gt=0)
    """Window for max_restarts."""
    restart_backoff_seconds: float = Field(1.0, ge=0)
    """First wait before restarting a failed task; doubles with each failure in the window."""
    max_retry_seconds: float = Field(60.0, gt=0)
    """Longest wait between attempts while a broker or bucket is unreachable (outages are retried until they end)."""


class RaySettings(_Section):
    """Where `round.runner: ray` sends rounds: an existing Ray cluster's Jobs API and the exchange both sides read."""

    address: str | None = Field(None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    """The cluster's dashboard (Jobs REST API), e.g. http://raycluster-head-svc:8265."""
    token: SecretStr | None = None
    """The cluster's token (its RAY_AUTH_MODE=token; TAOFLOW_RAY__TOKEN), sent as a bearer token; never logged."""
    token_file: Path | None = None
    """File holding the token (a mounted secret); used when token is unset."""
    exchange_uri: str | None = Field(None, pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?|/.+)$")
    """Where a round's inputs and outputs travel (prompts and candidates as Parquet, adapters as files):
    `s3://bucket/prefix`, or an absolute path both sides mount. Credentials: each side's own AWS chain."""
    exchange_endpoint_url: str | None = None
    """S3-compatible endpoint of exchange_uri (MinIO, Ceph, ...); unset for AWS."""
    exchange_region: str | None = None
    """AWS region of the exchange bucket."""
    python: str = Field("python", pattern=r"^[A-Za-z0-9_./-]+$")
    """The interpreter that runs the round's job on the cluster (taoflow and ray installed there)."""
    placement_timeout_seconds: float = Field(600.0, gt=0)
    """A job the cluster does not start, or a stage it cannot place (too few CPUs or GPUs), waits for ever in Ray:
    after this long the round fails with that reason."""
    poll_seconds: float = Field(2.0, gt=0)
    """How often the round asks the Jobs API for its job's status and new log lines."""
    generation_actors: int = Field(1, ge=1)
    """Actors holding the generation model (Ray Data map_batches); each loads the model once."""
    generation_cpus: float = Field(1.0, ge=0)
    """CPUs each generation actor (and the gate's evaluation) takes."""
    generation_gpus: float = Field(0.0, ge=0)
    """GPUs each generation actor (and the gate's evaluation) takes."""
    generation_batch: int = Field(64, ge=1)
    """Prompts per generation batch (each batch sampled with its own seed)."""
    score_actors: int = Field(1, ge=1)
    """CPU actors scoring candidates (each holds the task's scorers and their sandbox)."""
    score_batch: int = Field(256, ge=1)
    """Prompts per scoring batch."""
    train_workers: int = Field(1, ge=1)
    """Ray Train workers (data parallel; one per GPU on a GPU cluster)."""
    train_cpus: float = Field(1.0, ge=0)
    """CPUs each training worker takes."""
    train_gpus: float = Field(0.0, ge=0)
    """GPUs each training worker takes (1 on a GPU cluster)."""
    max_failures: int = Field(3, ge=0)
    """Times training restarts from its last checkpoint after losing a worker or node before the round fails."""


class RoundSettings(_Section):
    """Where rounds run."""

    runner: Literal["local", "ray"] = "local"
    """`local`: a child process of the daemon on its machine; `ray`: the round's generation, scoring, training and
    gate evaluation run as one job on a Ray cluster (`ray.*`), the daemon recording it as for a local round."""


class WatchSettings(_Section):
    """After a deploy: watch the fleet and roll back to `previous` when a threshold is crossed."""

    window_seconds: float = Field(900.0, ge=0)
    """How long a new champion is watched after it reaches every replica (0: not watched)."""
    max_error_rate: float = Field(0.05, ge=0.0, le=1.0)
    """Share of OpenAI-endpoint answers that may be 4xx/5xx (summed over replicas) before rolling back."""
    max_p99_latency_seconds: float | None = Field(None, gt=0)
    """If set, roll back when the p99 end-to-end latency since the deploy (vLLM's histogram) exceeds this."""
    max_score_drop: float = Field(0.1, ge=0.0, le=1.0)
    """Roll back when the mean score of live responses logged since the deploy falls this far below before."""
    min_requests: int = Field(20, ge=1)
    """Requests needed before error rate and latency are judged."""
    min_scores: int = Field(20, ge=1)
    """Scored live responses needed (after and before the deploy) before the score is judged."""


class FleetSettings(_Section):
    """The vLLM servers that serve the adapters (runtime LoRA API; VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."""

    replicas: list[str] = Field(default_factory=list)
    """Base URLs of vLLM servers, e.g. http://vllm-0.vllm:8000 (empty, with no dns_name: no fleet)."""
    dns_name: str | None = None
    """A headless service name whose addresses are the replicas; re-resolved on every reconcile."""
    port: int = Field(8000, ge=1, le=65535)
    """Port of the replicas found through dns_name."""
    api_key: SecretStr | None = None
    """The servers' --api-key, if set (TAOFLOW_FLEET__API_KEY from a secret)."""
    stage_dir: Path | None = None
    """A volume shared with the servers: versions are copied here before a load (needed with an S3 store)."""
    adapter_root_on_servers: Path | None = None
    """Where the servers mount stage_dir (or the local store); unset: the same path as here."""
    max_lora_rank: int = Field(16, ge=1)
    """The servers' --max-lora-rank: adapters of a higher rank are refused before any replica sees them."""
    canary_replicas: int = Field(1, ge=1)
    """Replicas that get a new adapter first and serve the smoke evaluation."""
    batch_size: int = Field(1, ge=1)
    """Replicas switched together after the canary."""
    max_unavailable: int = Field(0, ge=0)
    """Unreachable replicas a rollout may skip (the reconciler brings them up later); more reverts the deploy."""
    smoke_prompts: int = Field(16, ge=0)
    """Held-out prompts evaluated through the canary (new version vs the live one, gate scorers); 0 skips."""
    smoke_max_regression: float = Field(0.05, ge=0.0)
    """The canary's mean score may fall at most this far below the live adapter's."""
    reconcile_interval_seconds: float = Field(30.0, gt=0)
    """How often replicas are compared with the registry's champion and repaired."""
    unreachable_alert_after: int = Field(3, ge=1)
    """Consecutive failed reconciles after which a replica is reported unreachable."""
    auto_deploy: bool = True
    """Roll out every adapter that passes the gate (rounds then leave promotion to the deploy)."""
    request_timeout_seconds: float = Field(10.0, gt=0)
    """Timeout of the LoRA and metrics calls."""
    retries: int = Field(3, ge=1)
    """Attempts per replica call before it counts as unreachable."""
    generate_concurrency: int = Field(8, ge=1)
    """Concurrent requests of the fleet generation backend (generate.backend: fleet)."""
    routing: Literal["direct", "gateway"] = "direct"
    """How clients reach a new version. `gateway`: each version is loaded under its own name and `taoflow
    gateway` maps the stable name to it (shifted by weight, the old one drained, then unloaded: no failed
    request). `direct`: clients call the replicas; the stable name is unloaded and loaded again (a window of
    milliseconds in which a request for it gets a 404)."""
    canary_weight: float = Field(0.1, ge=0.0, le=1.0)
    """gateway routing: share of the stable name's traffic sent to the new version while the rest of the
    fleet loads it (after the canary's smoke evaluation)."""
    drain_timeout_seconds: float = Field(300.0, ge=0)
    """gateway routing: longest wait for gateways to finish the old version's requests before it is unloaded."""
    gateway_stale_seconds: float = Field(30.0, gt=0)
    """A gateway that has not reported for this long is taken as gone (not waited for when draining)."""
    watch: WatchSettings = WatchSettings()
    """The post-deploy watch."""

    @property
    def configured(self) -> bool:
        """Whether there is a fleet at all (replicas listed or a DNS name to find them)."""
        return bool(self.replicas or self.dns_name)


class CaptureSettings(_Section):
    """What `taoflow gateway` writes of each exchange, and where (the shapes taoflow's sources read)."""

    sink: Literal["none", "kafka", "s3", "jsonl"] = "none"
    """`kafka`: the topic below on source.kafka's cluster (acks=all, idempotent where the broker allows); `s3`:
    batched gzipped JSON-lines objects under source.s3's bucket and prefix; `jsonl`: files in jsonl_dir."""
    topic: str | None = None
    """kafka: the topic records go to (default: the first of source.kafka.topics)."""
    jsonl_dir: Path = Path("capture")
    """jsonl: directory of daily files (capture-YYYYMMDD.jsonl); source.paths can name it."""
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    """Share of exchanges captured (by request-id hash); ingest.sample_rates applies per task on top."""
    spool_dir: Path = Path("gateway-spool")
    """Where records wait for the sink (SQLite); on a volume that outlives the process."""
    spool_max_bytes: int = Field(1 << 30, ge=1 << 16)
    """Spool size past which new records are dropped (counted in taoflow_gateway_capture_dropped_total)."""
    durable: bool = True
    """Answer the last byte of a response only after its record is on disk (one group-committed fsync), so a
    crash loses no answered exchange; false: records are spooled after the answer."""
    batch_records: int = Field(500, ge=1)
    """Records per sink write (one S3 object holds at most this many)."""
    flush_seconds: float = Field(1.0, gt=0)
    """Longest a record waits in the spool before a smaller batch is written."""
    max_record_bytes: int = Field(1 << 20, ge=1024)
    """Exchanges larger than this (request and response) are not captured (counted as too_large)."""


class GatewaySettings(_Section):
    """`taoflow gateway`: the OpenAI-compatible proxy in front of the fleet; routes the stable name to versions."""

    host: str = "127.0.0.1"
    """Address it listens on (0.0.0.0 in a pod)."""
    port: int = Field(8080, ge=0, le=65535)
    """Port of the proxy (also /healthz, /readyz, /metrics)."""
    id: str | None = None
    """This gateway's name in reports to the daemon (default: the host name)."""
    daemon_url: str | None = None
    """The daemon's admin API, for the route table (default: daemon.admin_url); reached with daemon.gateway_token."""
    routes_poll_seconds: float = Field(1.0, gt=0)
    """How often the route table is read (and in-flight requests reported)."""
    replicas_poll_seconds: float = Field(2.0, gt=0)
    """How often each replica's served names (GET /v1/models) are read; a failing one is taken out."""
    connect_timeout_seconds: float = Field(2.0, gt=0)
    """Connecting to a replica; a refused or timed-out connection is retried on another replica."""
    request_timeout_seconds: float = Field(600.0, gt=0)
    """Longest one request may take, streaming included (504 before the first byte; cut after it)."""
    retries: int = Field(2, ge=0)
    """Further replicas tried when one refuses the connection or no longer serves the name (before any byte)."""
    max_body_bytes: int = Field(4 << 20, ge=1024)
    """Largest request body accepted (413 past it)."""
    max_connections: int = Field(1024, ge=1)
    """Connections to the replicas, in all."""
    capture: CaptureSettings = CaptureSettings()
    """Traffic capture into the flywheel."""


class Settings(BaseSettings):
    """Everything taoflow can be told, one section per stage."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", use_attribute_docstrings=True
    )

    storage: StorageSettings = StorageSettings()
    """Durable state."""
    source: SourceSettings = SourceSettings()
    """Prompt source."""
    ingest: IngestSettings = IngestSettings()
    """What happens to records before they are buffered."""
    model: ModelSettings = ModelSettings()
    """Base model and served name."""
    generate: GenerateSettings = GenerateSettings()
    """Candidate generation."""
    score: ScoreSettings = ScoreSettings()
    """Verifiers and other scorers."""
    train: TrainSettings = TrainSettings()
    """Adapter training."""
    gate: GateSettings = GateSettings()
    """The eval gate."""
    retrain: RetrainSettings = RetrainSettings()
    """When rounds start."""
    daemon: DaemonSettings = DaemonSettings()
    """The long-running service."""
    fleet: FleetSettings = FleetSettings()
    """The vLLM serving fleet."""
    gateway: GatewaySettings = GatewaySettings()
    """The serving edge (`taoflow gateway`)."""
    round: RoundSettings = RoundSettings()
    """Where rounds run."""
    ray: RaySettings = RaySettings()
    """The Ray cluster of `round.runner: ray`."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit overrides (command-line flags, passed as init values) beat the environment, which beats
        # the YAML file: an operator overrides a baked-in config with one variable, and a flag on the command
        # line is the last word.
        return init_settings, _Environment(settings_cls), _FileSections(settings_cls)


#: The YAML file's sections while load_settings builds a Settings (the lowest source but the defaults).
_FILE_SECTIONS: ContextVar[dict[str, Any] | None] = ContextVar("taoflow_file_sections", default=None)


class _FileSections(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_SECTIONS.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_SECTIONS.get() or {})


class _Environment(EnvSettingsSource):
    """`TAOFLOW_` variables; a list may also be written comma-separated (`a:9092,b:9092`) and a mapping as
    `key=value,key=value`, as people write them in a shell or a manifest, besides JSON."""

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        except ValueError:
            origin = get_origin(field.annotation) if field is not None else None
            if not isinstance(value, str) or origin not in (list, dict):
                raise
            items = [item.strip() for item in value.split(",") if item.strip()]
            if origin is list:
                return items
            if all("=" in item for item in items):
                return dict(item.split("=", 1) for item in items)
            raise


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file (if any) and the environment; raise ConfigurationError naming the bad key."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"cannot read config file {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigurationError(f"config file {path} must hold a mapping of sections")
        data = _inputs_beside(loaded, Path(path).parent)
    for warning in unknown_environment(os.environ):
        log.warning("%s", warning)
    file_sections = _FILE_SECTIONS.set(data)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise ConfigurationError(f"invalid settings ({path or 'defaults'}): {problems}") from None
    except SettingsError as exc:  # an environment variable that could not be decoded
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigurationError(f"invalid {ENV_PREFIX} environment variable: {exc}{cause}") from None
    finally:
        _FILE_SECTIONS.reset(file_sections)


def _inputs_beside(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Input files a config file names (source.paths, gate.golden_file) are relative to that file."""
    source, gate = data.get("source"), data.get("gate")
    if isinstance(source, dict) and isinstance(source.get("paths"), list):
        source["paths"] = [str(folder / p) if isinstance(p, str) else p for p in source["paths"]]
    if isinstance(gate, dict) and isinstance(gate.get("golden_file"), str):
        gate["golden_file"] = str(folder / gate["golden_file"])
    return data


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"])
    hint = ""
    if error["type"] == "extra_forbidden" and error["loc"]:
        close = difflib.get_close_matches(str(error["loc"][-1]), sorted(_field_names()), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: {error['msg']}{hint}"


def _field_names() -> set[str]:
    """Every field name of every section (what a misspelt key is compared with)."""
    sections: list[type[BaseModel]] = [Settings, *_Section.__subclasses__()]
    return {name for section in sections for name in section.model_fields}


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """A warning for each `TAOFLOW_` variable that names no setting (a misspelling is otherwise ignored)."""
    known = _setting_paths()
    warnings = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower()
        if path in known or any(path.startswith(p + "__") for p, is_map in known.items() if is_map):
            continue
        close = difflib.get_close_matches(path, list(known), n=1, cutoff=0.7)
        hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}?" if close else ""
        warnings.append(f"environment variable {name} names no setting and is ignored{hint}")
    return warnings


def _setting_paths(model: type[BaseModel] | None = None, prefix: str = "") -> dict[str, bool]:
    """Every settable path in environment form (`source__kafka__topics`), and whether keys may follow it."""
    paths: dict[str, bool] = {}
    for name, field in (model or Settings).model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            paths[path] = False
            paths.update(_setting_paths(annotation, f"{path}__"))
        else:
            paths[path] = get_origin(annotation) is dict
    return paths


#: The shortest admin token accepted: a guessable token guards promote, rollback and trigger.
MIN_TOKEN_LENGTH = 16


def admin_token(settings: Settings) -> str:
    """The admin API's bearer token, from daemon.admin_token or the file daemon.admin_token_file names."""
    d = settings.daemon
    token = _secret(d.admin_token, d.admin_token_file, "admin")
    if token is None:
        raise ConfigurationError(
            "the admin API needs a token: set TAOFLOW_DAEMON__ADMIN_TOKEN or daemon.admin_token_file (a mounted secret)"
        )
    return token


def metrics_token(settings: Settings) -> str | None:
    """The read-only token that may only GET /metrics (what a scraper holds), if one is set."""
    d = settings.daemon
    return _secret(d.metrics_token, d.metrics_token_file, "metrics")


def gateway_token(settings: Settings) -> str | None:
    """The token that may only read routes and report (what `taoflow gateway` presents), if one is set."""
    d = settings.daemon
    return _secret(d.gateway_token, d.gateway_token_file, "gateway")


def ray_token(settings: Settings) -> str | None:
    """The Ray cluster's token (ray.token or the file ray.token_file names), if one is set."""
    r = settings.ray
    return _secret(r.token, r.token_file, "Ray", where="ray.token")


def ray_runner_problems(settings: Settings) -> list[str]:
    """What stops `round.runner: ray` from running a round with these settings (empty: nothing)."""
    if settings.round.runner != "ray":
        return []
    problems = []
    if settings.ray.address is None:
        problems.append("ray.address is unset: the Ray cluster's dashboard, e.g. http://raycluster-head-svc:8265")
    if settings.ray.exchange_uri is None:
        problems.append("ray.exchange_uri is unset: s3://bucket/prefix (or a path both sides mount) for the rounds")
    if settings.generate.backend == "fleet":
        problems.append("generate.backend fleet generates on the serving fleet, not the cluster: use transformers")
    if settings.train.objective == "grpo":
        problems.append("train.objective grpo is not run on Ray yet: use sft or dpo, or round.runner local")
    every = [*settings.score.tasks.values(), *settings.gate.scorers.values(), settings.score.default]
    model_scorers = sorted({s.type for specs in every for s in specs} & {"reward_model", "self_certainty"})
    if model_scorers:
        problems.append(
            f"scorers {', '.join(model_scorers)} fit statistics over the whole round, which Ray's scoring batches "
            "split: score with verifiers or a judge, or use round.runner local"
        )
    return problems


def _secret(value: SecretStr | None, file: Path | None, name: str, *, where: str = "") -> str | None:
    setting = where or f"daemon.{name}_token"
    token, where = "", setting
    if value is not None and value.get_secret_value():
        token = value.get_secret_value()
    elif file is not None:
        where = f"{setting}_file ({file})"
        try:
            token = file.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {setting}_file: {exc}") from None
        if not token:
            raise ConfigurationError(f"{where} is empty: write the token into it (openssl rand -hex 32)")
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"the {name} token in {where} has {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
            "(openssl rand -hex 32)"
        )
    return token


def reference_table() -> str:
    """The configuration reference as a Markdown table (README.md embeds it; a test keeps them equal)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]

    def walk(model: BaseModel, prefix: str) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if isinstance(value, _Section):
                walk(value, f"{prefix}{name}.")
            else:
                meaning = " ".join((field.description or "").split())  # one table row, however the docstring wraps
                rows.append(f"| `{prefix}{name}` | `{_show(value)}` | {meaning} |")

    walk(Settings.model_construct(), "")  # defaults only: the environment must not leak in
    return "\n".join(rows)


def _show(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        items = (", ".join(f"{k}: {v}" for k, v in i.model_dump(exclude_defaults=True).items()) for i in value)
        return "[" + ", ".join("{" + item + "}" for item in items) + "]"
    if isinstance(value, list | dict) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return str(value)

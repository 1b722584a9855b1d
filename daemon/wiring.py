"""Builds the concrete parts named by the settings: the one place where choices are wired."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from taoflow.connectors.artifacts import LocalArtifactStore
from taoflow.connectors.base_model import ResolvedModel, resolve_base_model
from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.jsonl_source import JsonlSource
from taoflow.connectors.protocols import ArtifactStore, Generator, Source
from taoflow.connectors.redaction import Redactor
from taoflow.connectors.scoring import CompositeScorer, build_scorer
from taoflow.connectors.training import TrainingConfig
from taoflow.daemon.buffer import PromptBuffer
from taoflow.daemon.ingest import Ingestor
from taoflow.daemon.metrics import IngestMetrics
from taoflow.daemon.registry import Registry
from taoflow.daemon.settings import ScorerSpec, Settings
from taoflow.daemon.storage import Database
from taoflow.daemon.streaming import ObjectSource, StreamSource
from taoflow.policies.gate import GatePolicy
from taoflow.policies.ingest_filter import IngestFilter

__all__ = ["State", "TaskScorers", "open_state"]


class TaskScorers:
    """A composite scorer per task, built lazily from the `score` settings."""

    def __init__(self, tasks: Mapping[str, list[ScorerSpec]], default: list[ScorerSpec]) -> None:
        self._specs = dict(tasks)
        self._default = default
        self._built: dict[str, CompositeScorer] = {}
        for specs in [*self._specs.values(), default]:
            self._build(specs)  # construct once now: a bad scorer config fails at start-up

    def for_task(self, task: str) -> CompositeScorer:
        if task not in self._built:
            self._built[task] = self._build(self._specs.get(task, self._default))
        return self._built[task]

    def all(self) -> dict[str, CompositeScorer]:
        return dict(self._built)

    @staticmethod
    def _build(specs: list[ScorerSpec]) -> CompositeScorer:
        return CompositeScorer([(build_scorer(s.type, dict(s.params)), s.weight) for s in specs])


class State:
    """The durable state of one taoflow installation: database, buffer, registry, artifacts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        root = settings.storage.state_dir
        self.db = Database(root / settings.storage.database)
        self.buffer = PromptBuffer(
            self.db,
            heldout_fraction=settings.ingest.heldout_fraction,
            heldout_max_per_task=settings.ingest.heldout_max_per_task,
        )
        self.registry = Registry(self.db)
        self.store = build_artifact_store(settings)
        self.rounds_dir = root / "rounds"

    def close(self) -> None:
        self.db.close()


def build_artifact_store(settings: Settings) -> ArtifactStore:
    """Adapters on local disk (or a shared volume) by default, in S3 when storage.artifacts_uri says so."""
    s = settings.storage
    if s.artifacts_uri is None:
        return LocalArtifactStore(s.state_dir / "adapters")
    from taoflow.connectors.artifacts_s3 import S3ArtifactStore

    bucket, _, prefix = s.artifacts_uri.removeprefix("s3://").partition("/")
    return S3ArtifactStore(
        bucket, prefix, s.state_dir / "adapter-cache", endpoint_url=s.artifacts_endpoint_url, region=s.artifacts_region
    )


def open_state(settings: Settings) -> State:
    return State(settings)


def build_stream_source(settings: Settings) -> StreamSource:
    """The streaming source (Kafka); imports its client only when one is configured."""
    from taoflow.connectors.kafka_source import KafkaConfig, KafkaSource

    k = settings.source.kafka
    options: dict[str, object] = {"security_protocol": k.security_protocol}
    optional = {
        "sasl_mechanism": k.sasl_mechanism,
        "sasl_plain_username": k.sasl_username,
        "sasl_plain_password": k.sasl_password.get_secret_value() if k.sasl_password else None,
        "ssl_cafile": str(k.ssl_cafile) if k.ssl_cafile else None,
        "ssl_certfile": str(k.ssl_certfile) if k.ssl_certfile else None,
        "ssl_keyfile": str(k.ssl_keyfile) if k.ssl_keyfile else None,
    }
    options.update({key: value for key, value in optional.items() if value is not None})
    config = KafkaConfig(
        bootstrap_servers=k.bootstrap_servers,
        group_id=k.group_id,
        topics=k.topics,
        topic_pattern=k.topic_pattern,
        max_poll_records=k.max_poll_records,
        session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=k.heartbeat_interval_ms,
        max_poll_interval_ms=k.max_poll_interval_ms,
        client_options=options,
    )
    return KafkaSource(config)


def build_object_source(settings: Settings) -> ObjectSource:
    """The S3 inference-table source; imports boto3 only when one is configured."""
    from taoflow.connectors.s3_source import S3Config, S3Source

    s3 = settings.source.s3
    if not s3.bucket:
        raise ConfigurationError("source.kind is s3 but source.s3.bucket is empty")
    return S3Source(
        S3Config(bucket=s3.bucket, prefix=s3.prefix, endpoint_url=s3.endpoint_url, region=s3.region, order=s3.order)
    )


def build_source(settings: Settings) -> Source:
    if settings.source.kind != "jsonl":
        raise ConfigurationError(f"source.kind {settings.source.kind!r} is a streaming source: use `ingest --follow`")
    if not settings.source.paths:
        raise ConfigurationError("source.paths is empty: name JSONL files or directories to ingest")
    return JsonlSource(settings.source.paths)


def build_ingestor(
    settings: Settings,
    state: State,
    source_name: str,
    *,
    field_map: dict[str, str] | None = None,
    metrics: IngestMetrics | None = None,
) -> Ingestor:
    i = settings.ingest
    return Ingestor(
        state.buffer,
        source=source_name,
        default_task=i.default_task,
        redactor=Redactor(i.redact),
        rules=IngestFilter(
            keep_status=frozenset(i.keep_status),
            sample_rates=dict(i.sample_rates),
            max_prompt_chars=i.max_prompt_chars,
            task_map=dict(i.task_map),
        ),
        field_map=field_map,
        metrics=metrics,
    )


def build_scorers(settings: Settings) -> TaskScorers:
    return TaskScorers(settings.score.tasks, settings.score.default)


def resolve_model(settings: Settings) -> ResolvedModel:
    return resolve_base_model(settings.model.base, cache_dir=settings.model.cache_dir.expanduser())


def build_generator(settings: Settings, model_dir: Path) -> Generator:
    """The generation backend; imports torch (or vLLM) only when called."""
    if settings.generate.backend == "fleet":
        from taoflow.connectors.generation_fleet import FleetGenerator
        from taoflow.daemon.fleet import Fleet

        fleet = Fleet(settings.fleet, build_artifact_store(settings))
        urls = fleet.urls() if settings.fleet.configured else []
        if not urls:
            raise ConfigurationError("generate.backend is 'fleet' but fleet.replicas / fleet.dns_name name no replica")
        return FleetGenerator(
            [fleet.replica(u) for u in urls],
            concurrency=settings.fleet.generate_concurrency,
            path_on_servers=lambda adapter: fleet.server_path(adapter.name),
        )
    if settings.generate.backend == "vllm":
        from taoflow.connectors.generation_vllm import VllmGenerator

        return VllmGenerator(model_dir, max_lora_rank=settings.train.lora_rank, seed=settings.generate.seed)
    from taoflow.connectors.generation_local import TransformersGenerator

    return TransformersGenerator(model_dir, batch_rows=settings.generate.batch_rows)


def training_config(settings: Settings) -> TrainingConfig:
    t = settings.train
    return TrainingConfig(
        objective=t.objective,
        lora_rank=t.lora_rank,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        learning_rate=t.learning_rate,
        epochs=t.epochs,
        batch_size=t.batch_size,
        max_length=t.max_length,
        dpo_beta=t.dpo_beta,
        seed=t.seed,
        save_steps=t.save_steps,
    )


def gate_policy(settings: Settings) -> GatePolicy:
    g = settings.gate
    return GatePolicy(
        min_mean_improvement=g.min_mean_improvement,
        max_slice_regression=g.max_slice_regression,
        min_samples=g.min_samples,
        min_slice_samples=g.min_slice_samples,
    )

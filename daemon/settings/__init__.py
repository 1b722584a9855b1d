"""The one settings tree: a section per stage, read from a YAML file and `TAOFLOW_` variables.

    root        the Settings tree and its sources (overrides > environment > YAML file > defaults)
    base        Section, ObjectStoreLocation (uri, endpoint, region), TokenSource (inline or a mounted file)
    <section>   one module per section: storage, sources, ingest, model, generate, score, train, gate, retrain,
                daemon, fleet, gateway, ray
    loading     load_settings: the file and the environment read, errors that name the bad key
    renamed     old flat keys and their TAOFLOW_ names, read as the new ones with a deprecation line
    secrets     the tokens taoflow holds
    checks      settings valid alone that cannot work together
    reference   the configuration reference README.md embeds

This package is the only place that reads the environment; everything else receives the values it needs.
"""

from taoflow.daemon.settings.base import MIN_TOKEN_LENGTH, ObjectStoreLocation, Section, TokenSource
from taoflow.daemon.settings.checks import known_tasks, ray_runner_problems
from taoflow.daemon.settings.daemon import DaemonSettings
from taoflow.daemon.settings.fleet import FleetSettings, ShadowSettings, WatchSettings
from taoflow.daemon.settings.gate import GateSettings, MonitorSettings
from taoflow.daemon.settings.gateway import CaptureSettings, GatewaySettings
from taoflow.daemon.settings.generate import GenerateSettings, VllmEngineSettings
from taoflow.daemon.settings.ingest import IngestSettings
from taoflow.daemon.settings.loading import load_settings, unknown_environment
from taoflow.daemon.settings.model import ModelSettings
from taoflow.daemon.settings.ray import RaySettings, RoundSettings
from taoflow.daemon.settings.reference import reference_table
from taoflow.daemon.settings.retrain import RetrainSettings
from taoflow.daemon.settings.root import ENV_PREFIX, Settings
from taoflow.daemon.settings.score import SandboxSettings, ScorerSpec, ScoreSettings
from taoflow.daemon.settings.secrets import (
    admin_token,
    gateway_api_keys,
    gateway_token,
    metrics_token,
    ray_token,
    sample_key,
)
from taoflow.daemon.settings.sources import DeltaSettings, KafkaSettings, S3Settings, SourceSettings
from taoflow.daemon.settings.storage import RetentionSettings, StorageSettings
from taoflow.daemon.settings.train import DpoSettings, GrpoSettings, TrainSettings

__all__ = [
    "ENV_PREFIX",
    "MIN_TOKEN_LENGTH",
    "CaptureSettings",
    "DaemonSettings",
    "DeltaSettings",
    "DpoSettings",
    "FleetSettings",
    "GateSettings",
    "GatewaySettings",
    "GenerateSettings",
    "GrpoSettings",
    "IngestSettings",
    "KafkaSettings",
    "ModelSettings",
    "MonitorSettings",
    "ObjectStoreLocation",
    "RaySettings",
    "RetentionSettings",
    "RetrainSettings",
    "RoundSettings",
    "S3Settings",
    "SandboxSettings",
    "ScoreSettings",
    "ScorerSpec",
    "Section",
    "Settings",
    "ShadowSettings",
    "SourceSettings",
    "StorageSettings",
    "TokenSource",
    "TrainSettings",
    "VllmEngineSettings",
    "WatchSettings",
    "admin_token",
    "gateway_api_keys",
    "gateway_token",
    "known_tasks",
    "load_settings",
    "metrics_token",
    "ray_runner_problems",
    "ray_token",
    "reference_table",
    "sample_key",
    "unknown_environment",
]

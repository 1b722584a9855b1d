"""The root of the settings tree (one section per stage) and the sources it is read from.

Precedence, highest first: explicit overrides, environment (`TAOFLOW_GENERATE__N=8`; `__` nests), the YAML file,
the defaults. This package is the only place that reads the environment.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, get_origin

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from taoflow.daemon.settings.base import TokenSource
from taoflow.daemon.settings.daemon import DaemonSettings
from taoflow.daemon.settings.fleet import FleetSettings
from taoflow.daemon.settings.gate import GateSettings
from taoflow.daemon.settings.gateway import GatewaySettings
from taoflow.daemon.settings.generate import GenerateSettings
from taoflow.daemon.settings.ingest import IngestSettings
from taoflow.daemon.settings.model import ModelSettings
from taoflow.daemon.settings.ray import RaySettings, RoundSettings
from taoflow.daemon.settings.renamed import translate
from taoflow.daemon.settings.retrain import RetrainSettings
from taoflow.daemon.settings.score import ScoreSettings
from taoflow.daemon.settings.sources import SourceSettings
from taoflow.daemon.settings.storage import StorageSettings
from taoflow.daemon.settings.train import TrainSettings

__all__ = ["ENV_PREFIX", "FILE_SECTIONS", "Settings"]

ENV_PREFIX = "TAOFLOW_"


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
FILE_SECTIONS: ContextVar[dict[str, Any] | None] = ContextVar("taoflow_file_sections", default=None)


class _FileSections(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (FILE_SECTIONS.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(FILE_SECTIONS.get() or {})


class _Environment(EnvSettingsSource):
    """`TAOFLOW_` variables; a list may also be written comma-separated (`a:9092,b:9092`) and a mapping as
    `key=value,key=value`, as people write them in a shell or a manifest, besides JSON. A token is a plain string.
    Variables of renamed settings are read under their new names."""

    def __call__(self) -> dict[str, Any]:
        return translate(super().__call__(), environment=True)

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        annotation = field.annotation if field is not None else None
        if annotation is TokenSource and isinstance(value, str) and not value.lstrip().startswith("{"):
            return value  # the token itself, whatever it looks like (TokenSource reads a string as its value)
        try:
            return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        except ValueError:
            origin = get_origin(annotation)
            if not isinstance(value, str) or origin not in (list, dict):
                raise
            items = [item.strip() for item in value.split(",") if item.strip()]
            if origin is list:
                return items
            if all("=" in item for item in items):
                return dict(item.split("=", 1) for item in items)
            raise

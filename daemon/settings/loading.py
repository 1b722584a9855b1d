"""Reading the settings: the YAML file, the environment and overrides; errors that name the bad key."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import SettingsError

from taoflow.connectors.errors import ConfigurationError
from taoflow.daemon.settings.base import Section
from taoflow.daemon.settings.renamed import renamed_environment, translate
from taoflow.daemon.settings.root import ENV_PREFIX, FILE_SECTIONS, Settings

__all__ = ["load_settings", "unknown_environment"]

log = logging.getLogger("taoflow.daemon.settings")


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
        data = _inputs_beside(translate(loaded), Path(path).parent)
    for warning in unknown_environment(os.environ):
        log.warning("%s", warning)
    file_sections = FILE_SECTIONS.set(data)
    try:
        return Settings(**translate(overrides))
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        raise ConfigurationError(f"invalid settings ({path or 'defaults'}): {problems}") from None
    except SettingsError as exc:  # an environment variable that could not be decoded
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigurationError(f"invalid {ENV_PREFIX} environment variable: {exc}{cause}") from None
    finally:
        FILE_SECTIONS.reset(file_sections)


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
    sections: list[type[BaseModel]] = [Settings, *_sections(Section)]
    return {name for section in sections for name in section.model_fields}


def _sections(base: type[BaseModel]) -> Iterator[type[BaseModel]]:
    for section in base.__subclasses__():
        yield section
        yield from _sections(section)


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """A warning for each `TAOFLOW_` variable that names no setting (a misspelling is otherwise ignored). A
    renamed setting's old name is known: it is read, with its own deprecation line."""
    known = _setting_paths()
    warnings = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or renamed_environment(name.upper(), ENV_PREFIX):
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
        if isinstance(annotation, type) and issubclass(annotation, Section):
            paths[path] = False
            paths.update(_setting_paths(annotation, f"{path}__"))
        else:
            paths[path] = get_origin(annotation) is dict
    return paths

"""Settings that moved: the old flat keys (`train.dpo_beta`) and their `TAOFLOW_` names keep working, each with
one deprecation line, and are read as the new ones (`train.dpo.beta`). Operators' files and the chart's values
use the old names; each source is translated on its own, so precedence between the sources holds as before."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

__all__ = ["RENAMED", "renamed_environment", "translate"]

log = logging.getLogger("taoflow.daemon.settings")

#: Old dotted path -> new dotted path.
RENAMED: dict[str, str] = {
    "storage.artifacts_uri": "storage.artifacts.uri",
    "storage.artifacts_endpoint_url": "storage.artifacts.endpoint_url",
    "storage.artifacts_region": "storage.artifacts.region",
    "ray.exchange_uri": "ray.exchange.uri",
    "ray.exchange_endpoint_url": "ray.exchange.endpoint_url",
    "ray.exchange_region": "ray.exchange.region",
    "ray.generation_actors": "ray.generation.actors",
    "ray.generation_cpus": "ray.generation.cpus",
    "ray.generation_gpus": "ray.generation.gpus",
    "ray.generation_batch": "ray.generation.batch",
    "ray.score_actors": "ray.score.actors",
    "ray.score_batch": "ray.score.batch",
    "ray.train_workers": "ray.train.workers",
    "ray.train_cpus": "ray.train.cpus",
    "ray.train_gpus": "ray.train.gpus",
    "ray.token_file": "ray.token.file",
    "train.dpo_margin": "train.dpo.margin",
    "train.dpo_beta": "train.dpo.beta",
    "train.grpo_generations": "train.grpo.generations",
    "train.grpo_max_completion_tokens": "train.grpo.max_completion_tokens",
    "train.grpo_temperature": "train.grpo.temperature",
    "train.grpo_beta": "train.grpo.beta",
    "daemon.admin_token_file": "daemon.admin_token.file",
    "daemon.metrics_token_file": "daemon.metrics_token.file",
    "daemon.gateway_token_file": "daemon.gateway_token.file",
}

#: Deprecations already said in this process (a process builds its settings more than once).
_said: set[str] = set()


def translate(data: Mapping[str, Any], *, environment: bool = False) -> dict[str, Any]:
    """`data` (sections of settings, as one source gives them) with every old key moved to its new place. Where a
    source gives both, the new key wins. Each old key is named once per process, as it is spelt in that source."""
    out = _copy(data)
    for old, new in RENAMED.items():
        *path, key = old.split(".")
        section = _walk(out, path)
        if section is None or key not in section:
            continue
        value = section.pop(key)
        _deprecated(old, new, environment=environment)
        *target, last = new.split(".")
        into = out
        for part in target:
            existing = into.get(part)
            if not isinstance(existing, dict):
                # A plain string where a section now stands is that section's value (a token given inline).
                existing = {} if existing is None else {"value": existing}
                into[part] = existing
            into = existing
        into.setdefault(last, value)
    return out


def renamed_environment(name: str, prefix: str) -> str | None:
    """The new variable name of an old `TAOFLOW_` variable, or None if `name` is not one."""
    path = name[len(prefix) :].lower().replace("__", ".")
    new = RENAMED.get(path)
    return prefix + new.replace(".", "__").upper() if new else None


def _deprecated(old: str, new: str, *, environment: bool) -> None:
    if environment:
        old = "TAOFLOW_" + old.replace(".", "__").upper()
        new = "TAOFLOW_" + new.replace(".", "__").upper()
    if old not in _said:
        _said.add(old)
        log.warning("setting %s is deprecated: it is read as %s (rename it)", old, new)


def _walk(data: dict[str, Any], path: list[str]) -> dict[str, Any] | None:
    for part in path:
        data = data.get(part)  # type: ignore[assignment]
        if not isinstance(data, dict):
            return None
    return data


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}

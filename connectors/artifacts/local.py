"""Adapter artifacts on local disk (or a shared volume), with names that cannot escape it."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from taoflow.connectors.errors import ArtifactError

__all__ = ["LocalArtifactStore", "check_adapter_dir", "validate_version"]

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ADAPTER_FILES = ("adapter_config.json",)
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def validate_version(version: str) -> str:
    """Adapter names become directory names and served model names: letters, digits, . _ - only."""
    if not _VERSION.fullmatch(version) or ".." in version:
        raise ArtifactError(
            f"invalid adapter version {version!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, and no '..'"
        )
    return version


def check_adapter_dir(directory: Path) -> dict[str, object]:
    """Fail early on a directory that is not a PEFT LoRA adapter; return its config."""
    config_path = directory / "adapter_config.json"
    if not config_path.is_file():
        raise ArtifactError(f"{directory} is not a PEFT adapter: adapter_config.json is missing")
    if not any((directory / name).is_file() for name in _WEIGHT_FILES):
        raise ArtifactError(f"{directory} has no adapter weights ({' or '.join(_WEIGHT_FILES)})")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{config_path} is unreadable: {exc}") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise ArtifactError(f"{directory} is not a LoRA adapter (peft_type={config.get('peft_type')!r})")
    return config


class LocalArtifactStore:
    """`root/<version>/` per adapter; writes go to a temporary sibling and are renamed in."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, version: str) -> Path:
        path = (self.root / validate_version(version)).resolve()
        if path.parent != self.root:
            raise ArtifactError(f"adapter version {version!r} resolves outside the artifact store")
        return path

    def put(self, version: str, directory: Path) -> str:
        check_adapter_dir(directory)
        target = self._path(version)
        if target.exists():
            raise ArtifactError(f"adapter version {version} already exists in {self.root}; versions are immutable")
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.root))
        try:
            for item in directory.iterdir():
                if item.is_symlink():
                    raise ArtifactError(f"refusing to store symlink {item} in an adapter artifact")
                if item.is_file():
                    shutil.copy2(item, staging / item.name)
            staging.chmod(0o755)  # mkdtemp makes it private; serving replicas may run as another user
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target.as_uri()

    def fetch(self, version: str) -> Path:
        path = self._path(version)
        if not path.is_dir():
            raise ArtifactError(f"adapter version {version} is not in {self.root}")
        return path

    def exists(self, version: str) -> bool:
        return self._path(version).is_dir()

    def uri(self, version: str) -> str:
        return self._path(version).as_uri()

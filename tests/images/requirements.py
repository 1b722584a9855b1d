"""What each image target and each virtualenv of the README installs, read from the Dockerfile and the setup
scripts themselves (so a pin edited there is the pin checked here), and pip's own resolver run over it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
#: The images are built from python:3.11 (Dockerfile's BASE) on x86-64 Linux: resolve for that, whatever runs this.
IMAGE_PYTHON = "3.11"
#: Every manylinux tag a python:3.11 (glibc 2.36) image accepts; pip matches each --platform exactly.
IMAGE_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
)
_STAGE = re.compile(r"^FROM\s+\S+\s+AS\s+(\S+)", re.IGNORECASE)
_ARG = re.compile(r'^ARG\s+(\w+)="([^"]*)"')
_WHEEL_EXTRAS = re.compile(r'taoflow-\*\.whl\)(\[[a-z,]+\])"')


@dataclass(frozen=True)
class Target:
    name: str
    #: taoflow's extras, e.g. "[ingest,train]".
    extras: str
    #: Requirements installed beside taoflow in the same pip call.
    beside: tuple[str, ...]


def image_targets() -> list[Target]:
    """Each Dockerfile stage that pip-installs taoflow, with the extras and the other specs of that `pip install`."""
    args: dict[str, str] = {}
    stage = ""
    targets: list[Target] = []
    for line in DOCKERFILE.read_text().splitlines():
        if m := _STAGE.match(line):
            stage = m.group(1)
        elif m := _ARG.match(line):
            args[m.group(1)] = m.group(2)
        elif "pip install" in line and (m := _WHEEL_EXTRAS.search(line)):
            beside = [value for name, value in args.items() if "${" + name in line and value]
            targets.append(Target(stage, m.group(1), tuple(beside)))
    return targets


def venv_targets() -> list[Target]:
    """The `pip install -e ".[...]" ...` lines of the setup scripts the README runs."""
    targets = []
    for script in ("setup.sh", "setup-ray.sh"):
        for line in (ROOT / "scripts" / script).read_text().splitlines():
            if m := re.search(r'install -e "\.(\[[a-z,]+\])"((?:\s+[\w.=<>!-]+)*)', line):
                targets.append(Target(f"scripts/{script}", m.group(1), tuple(m.group(2).split())))
    return targets


@dataclass(frozen=True)
class Resolution:
    ok: bool
    #: name -> version pip chose, when it resolved.
    versions: dict[str, str]
    #: pip's ERROR lines and its "The conflict is caused by:" lines, when it did not.
    conflict: list[str]
    output: str


def build_wheel(into: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(into), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    return next(into.glob("taoflow-*.whl"))


def resolve(wheel: Path, target: Target, work: Path) -> Resolution:
    """pip's resolver over the target's requirements for the image's Python and platform, installing nothing."""
    report = work / f"{target.name.replace('/', '_')}.json"
    platforms = [a for platform in IMAGE_PLATFORMS for a in ("--platform", platform)]
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--disable-pip-version-check",
        "--only-binary=:all:", "--python-version", IMAGE_PYTHON, *platforms,
        "--implementation", "cp", "--target", str(work / "target"), "--report", str(report),
        f"{wheel}{target.extras}", *target.beside,
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    if run.returncode == 0:
        installs = json.loads(report.read_text())["install"]
        versions = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in installs}
        return Resolution(True, versions, [], output)
    lines = output.splitlines()
    conflict = [line for line in lines if line.startswith("ERROR:") and "ResolutionImpossible" not in line]
    if "The conflict is caused by:" in lines:
        for line in lines[lines.index("The conflict is caused by:") + 1 :]:
            if not line.strip():
                break
            conflict.append(line.strip())
    return Resolution(False, {}, conflict, output)

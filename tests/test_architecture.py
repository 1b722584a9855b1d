"""The layering and the light daemon core are checked, not hoped for."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


BIN = Path(sys.executable).parent


def installed_layout(tmp_path: Path) -> Path:
    """The folders are installed as taoflow.* through a package-dir mapping, which static tools
    cannot see through an editable install: give them the installed layout, made of links."""
    package = tmp_path / "taoflow"
    package.mkdir()
    for name in ("daemon", "connectors", "policies"):
        (package / name).symlink_to(ROOT / name)
    return tmp_path


def run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_hold(tmp_path):
    layout = installed_layout(tmp_path)
    run(
        [str(BIN / "lint-imports"), "--config", str(ROOT / "pyproject.toml")],
        cwd=layout,
        env={"PYTHONPATH": str(layout)},
    )


def test_mypy_strict_on_the_package(tmp_path):
    layout = installed_layout(tmp_path)
    run(
        [
            str(BIN / "mypy"),
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / ".mypy"),
            "-p",
            "taoflow",
        ],
        cwd=layout,
        env={"MYPYPATH": str(layout)},
    )


def test_ruff_lint_and_format():
    run([str(BIN / "ruff"), "check", "."], cwd=ROOT)
    run([str(BIN / "ruff"), "format", "--check", "."], cwd=ROOT)


def test_daemon_core_and_cli_do_not_import_torch():
    code = (
        "import sys\n"
        "import taoflow.daemon.cli, taoflow.daemon.round.recipe, taoflow.daemon.wiring, taoflow.daemon.cli.demo\n"
        "import taoflow.daemon.service.running, taoflow.daemon.service.admin, taoflow.daemon.service.flywheel\n"
        "import taoflow.daemon.ingest.configured, taoflow.daemon.fleet.loop\n"
        "heavy = {'torch', 'transformers', 'trl', 'peft', 'vllm'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

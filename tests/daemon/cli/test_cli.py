"""The CLI's registry commands, on a registry seeded without a model."""

import json

import pytest

from taoflow.daemon.cli import main
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.state import State


@pytest.fixture
def seeded(tmp_path):
    state_dir = tmp_path / "state"
    state = State(load_settings(None, storage={"state_dir": str(state_dir)}))
    for version in ("taoflow-r0001", "taoflow-r0002"):
        state.registry.register(
            version=version,
            model="taoflow",
            parent=None,
            base_model="b",
            base_digest="d",
            uri="file:///x",
            manifest={"data": {"prompts": 3}},
        )
        state.registry.transition(version, "gated", reason="gate passed")
        state.registry.promote(version, reason="better")
    state.close()
    return ["--state-dir", str(state_dir)]


def test_adapters_list_and_show(seeded, capsys):
    assert main(["adapters", "list", *seeded]) == 0
    out = capsys.readouterr().out
    assert "taoflow-r0002  champion  champion" in out and "taoflow-r0001  retired   previous" in out
    assert main(["adapters", "show", "previous", *seeded]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "taoflow-r0001"
    assert [h["to"] for h in shown["history"]] == ["candidate", "gated", "champion", "retired"]


def test_rollback_then_roll_forward(seeded, capsys):
    assert main(["rollback", *seeded]) == 0
    assert "champion taoflow-r0002 -> taoflow-r0001" in capsys.readouterr().out
    assert main(["rollback", "--to", "taoflow-r0002", "--reason", "fixed", *seeded]) == 0
    assert "-> taoflow-r0002" in capsys.readouterr().out


def test_errors_are_one_clear_line(seeded, capsys):
    assert main(["rollback", "--to", "nope", *seeded]) == 2
    assert "no adapter version 'nope'" in capsys.readouterr().err
    assert main(["round", "--state-dir", "x", "--config", "/does/not/exist.yaml"]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_effective_settings_never_show_secrets(tmp_path, capsys, monkeypatch):
    config = tmp_path / "taoflow.yaml"
    config.write_text("daemon:\n  admin_token: supersecret-admin\n")
    monkeypatch.setenv("TAOFLOW_SOURCE__KAFKA__SASL_PASSWORD", "supersecret-sasl")
    assert main(["settings", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert "supersecret" not in shown
    assert json.loads(shown)["daemon"]["admin_token"] == "**********"

import pytest

from taoflow.connectors.errors import ConfigurationError
from taoflow.daemon.settings import Settings, load_settings


def test_defaults_are_valid_and_every_field_is_documented():
    settings = load_settings(None)
    assert settings.generate.n == 8

    def undocumented(model, prefix=""):
        for name, field in type(model).model_fields.items():
            if not field.description:
                yield prefix + name
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                yield from undocumented(value, f"{prefix}{name}.")

    assert list(undocumented(settings)) == []


def test_a_command_line_override_beats_the_environment_which_beats_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("storage:\n  state_dir: /from/file\n  database: file.db\ndaemon:\n  admin_host: 10.0.0.1\n")
    monkeypatch.setenv("TAOFLOW_STORAGE__STATE_DIR", "/from/env")  # as the image sets it
    monkeypatch.setenv("TAOFLOW_DAEMON__ADMIN_HOST", "0.0.0.0")
    settings = load_settings(path, storage={"state_dir": "/from/flag"})  # what --state-dir passes
    assert str(settings.storage.state_dir) == "/from/flag"
    assert settings.storage.database == "file.db"  # the rest of the section still comes from the file
    assert settings.daemon.admin_host == "0.0.0.0"


def test_yaml_file_then_environment(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("generate:\n  n: 4\n  temperature: 0.5\ntrain:\n  objective: dpo\n")
    monkeypatch.setenv("TAOFLOW_GENERATE__N", "16")
    settings = load_settings(path)
    assert settings.generate.n == 16  # environment wins
    assert settings.generate.temperature == 0.5  # from the file
    assert settings.train.objective == "dpo"


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("generate:\n  n: 0\n", "generate.n"),
        ("generate:\n  nn: 3\n", "generate.nn"),
        ("train:\n  objective: ppo\n", "train.objective"),
        ("ingest:\n  redact: [ssn]\n", "ingest.redact"),
        ("score:\n  tasks:\n    math:\n      - type: vibes\n", "score.tasks.math.0.type"),
        ("model:\n  served_name: ../etc\n", "model.served_name"),
        ("surprise: 1\n", "surprise"),
        ("retrain:\n  cron: '0 25 * * *'\n", "retrain.cron"),
        ("retrain:\n  cron: '61 * * * *'\n", "retrain.cron"),
        ("retrain:\n  cron: '* * * * * *'\n", "retrain.cron"),
    ],
)
def test_errors_name_the_bad_key(tmp_path, yaml_text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigurationError, match=key.replace(".", r"\.")):
        load_settings(path)


def test_unreadable_files_are_clear(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot read config file"):
        load_settings(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigurationError, match="must hold a mapping"):
        load_settings(tmp_path / "list.yaml")


def test_shipped_demo_config_is_valid():
    from taoflow.daemon.cli.demo import SAMPLES
    from taoflow.daemon.round.parts import build_scorers

    settings = load_settings(SAMPLES / "demo.yaml")
    assert isinstance(settings, Settings)
    scorers = build_scorers(settings)
    assert len(scorers.for_task("json_extract").parts) == 2


def test_readme_configuration_reference_is_current():
    from pathlib import Path

    from taoflow.daemon.settings import reference_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- settings-reference:start -->\n")[1].split("\n<!-- settings-reference:end -->")[0]
    assert block == reference_table(), "README.md is stale: paste the output of `taoflow settings` between the markers"

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


#: A valid value, other than the default, for each renamed setting (by its old key).
OLD_VALUES = {
    "storage.artifacts_uri": "s3://adapters-bucket/taoflow",
    "storage.artifacts_endpoint_url": "http://minio:9000",
    "storage.artifacts_region": "eu-west-1",
    "ray.exchange_uri": "s3://rounds-bucket/x",
    "ray.exchange_endpoint_url": "http://minio:9000",
    "ray.exchange_region": "eu-west-2",
    "ray.generation_actors": 3,
    "ray.generation_cpus": 2.5,
    "ray.generation_gpus": 1.0,
    "ray.generation_batch": 7,
    "ray.score_actors": 5,
    "ray.score_batch": 9,
    "ray.train_workers": 4,
    "ray.train_cpus": 3.0,
    "ray.train_gpus": 1.0,
    "ray.token_file": "/run/secrets/ray",
    "train.dpo_margin": 0.3,
    "train.dpo_beta": 0.2,
    "train.grpo_generations": 6,
    "train.grpo_max_completion_tokens": 20,
    "train.grpo_temperature": 0.5,
    "train.grpo_beta": 0.05,
    "daemon.admin_token_file": "/run/secrets/admin",
    "daemon.metrics_token_file": "/run/secrets/metrics",
    "daemon.gateway_token_file": "/run/secrets/gateway",
}


def _at(settings, dotted):
    value = settings
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@pytest.fixture
def fresh_deprecations(monkeypatch):
    from taoflow.daemon.settings import renamed

    monkeypatch.setattr(renamed, "_said", set())


def test_every_renamed_setting_has_a_test_value():
    from taoflow.daemon.settings.renamed import RENAMED

    assert set(OLD_VALUES) == set(RENAMED)


@pytest.mark.parametrize("old", sorted(OLD_VALUES))
def test_an_old_key_in_the_file_is_read_as_the_new_one_with_a_deprecation_line(
    tmp_path, caplog, fresh_deprecations, old
):
    import yaml

    from taoflow.daemon.settings.renamed import RENAMED

    section, key = old.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({section: {key: OLD_VALUES[old]}}))
    with caplog.at_level("WARNING", logger="taoflow.daemon.settings"):
        settings = load_settings(path)
    new = RENAMED[old]
    assert str(_at(settings, new)) == str(OLD_VALUES[old])
    said = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert said == [f"setting {old} is deprecated: it is read as {new} (rename it)"]


@pytest.mark.parametrize("old", sorted(OLD_VALUES))
def test_an_old_environment_name_is_read_as_the_new_one_with_a_deprecation_line(
    monkeypatch, caplog, fresh_deprecations, old
):
    from taoflow.daemon.settings.renamed import RENAMED

    variable = "TAOFLOW_" + old.replace(".", "__").upper()
    monkeypatch.setenv(variable, str(OLD_VALUES[old]))
    with caplog.at_level("WARNING", logger="taoflow.daemon.settings"):
        settings = load_settings(None)
    new = RENAMED[old]
    assert str(_at(settings, new)) == str(OLD_VALUES[old])
    said = [r.getMessage() for r in caplog.records if variable in r.getMessage()]
    new_variable = "TAOFLOW_" + new.replace(".", "__").upper()
    assert said == [f"setting {variable} is deprecated: it is read as {new_variable} (rename it)"]


def test_the_new_key_wins_over_the_old_one_in_the_same_source_and_precedence_holds_between_sources(
    tmp_path, monkeypatch, fresh_deprecations
):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  dpo_beta: 0.2\n  dpo:\n    beta: 0.3\nray:\n  generation:\n    actors: 2\n")
    monkeypatch.setenv("TAOFLOW_RAY__GENERATION_ACTORS", "5")  # old name, but the environment beats the file
    settings = load_settings(path)
    assert settings.train.dpo.beta == 0.3
    assert settings.ray.generation.actors == 5


def test_a_token_is_a_plain_string_or_a_file_and_is_never_shown(tmp_path, monkeypatch):
    from taoflow.daemon.settings import admin_token, ray_token

    monkeypatch.setenv("TAOFLOW_DAEMON__ADMIN_TOKEN", "1234567890123456")  # digits only: still the token itself
    settings = load_settings(None)
    assert admin_token(settings) == "1234567890123456"
    assert "1234567890123456" not in repr(settings) and "1234567890123456" not in settings.model_dump_json()
    (tmp_path / "ray").write_text("a-ray-token-of-some-length\n")
    from_file = load_settings(None, ray={"token": {"file": str(tmp_path / "ray")}})
    assert ray_token(from_file) == "a-ray-token-of-some-length"
    with pytest.raises(ConfigurationError, match=r"the Ray token in ray\.token\.file .* has 5 characters"):
        (tmp_path / "ray").write_text("short")
        ray_token(from_file)
    with pytest.raises(ConfigurationError, match=r"cannot read ray\.token\.file"):
        ray_token(load_settings(None, ray={"token": {"file": str(tmp_path / "missing")}}))


def test_an_object_store_location_is_checked_where_it_is_used():
    with pytest.raises(ConfigurationError, match=r"storage\.artifacts"):
        load_settings(None, storage={"artifacts": {"uri": "/a/folder"}})  # adapters: S3 or state_dir only
    assert load_settings(None, ray={"exchange": {"uri": "/mnt/shared"}}).ray.exchange.uri == "/mnt/shared"
    with pytest.raises(ConfigurationError, match=r"ray\.exchange\.uri"):
        load_settings(None, ray={"exchange": {"uri": "http://not-a-store"}})

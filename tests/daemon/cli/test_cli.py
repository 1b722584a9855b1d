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
    assert json.loads(shown)["daemon"]["admin_token"]["value"] == "**********"


def run_cli(*args, cwd=None, env=None):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "taoflow.daemon.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def test_every_option_has_help_and_the_version_is_printed():
    from taoflow.daemon.cli.main import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    undocumented = [
        f"{name} {action.option_strings or action.dest}"
        for name, sub in commands.choices.items()
        for action in sub._actions
        if not action.help
    ]
    assert undocumented == []
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("taoflow 0.")
    run_help = run_cli("run", "--help").stdout
    assert "TAOFLOW_DAEMON__ADMIN_TOKEN" in run_help and "daemon.admin_port (default 127.0.0.1:8470)" in run_help
    assert "SIGTERM or SIGINT drains" in run_help


def test_verbose_after_the_command_extra_arguments_refused_and_a_closed_pipe_is_quiet(tmp_path):
    assert main(["buffer", "-v", "--state-dir", str(tmp_path / "nothing")]) == 2  # -v parsed, state refused
    assert run_cli("status", "extra").returncode == 2
    listed = run_cli("adapters", "list", "v1")
    assert listed.returncode == 2 and "did you mean `adapters show VERSION`" in listed.stderr
    import subprocess
    import sys

    reader = subprocess.Popen(["head", "-c", "10"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    writer = subprocess.run(
        [sys.executable, "-m", "taoflow.daemon.cli", "settings"],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    reader.stdin.close()
    reader.wait(10)
    assert writer.returncode == 0 and b"Traceback" not in writer.stderr and b"BrokenPipe" not in writer.stderr


def test_taoflow_yaml_in_the_working_directory_is_read_and_missing_state_is_refused(seeded, tmp_path, capsys):
    state_dir = seeded[1]
    (tmp_path / "taoflow.yaml").write_text(f"storage:\n  state_dir: {state_dir}\n")
    listed = run_cli("adapters", "list", cwd=tmp_path)
    assert listed.returncode == 0 and "taoflow-r0002" in listed.stdout
    assert "using " + str(tmp_path / "taoflow.yaml") in listed.stderr
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    refused = run_cli("buffer", cwd=empty)
    assert refused.returncode == 2 and "no taoflow state at .taoflow/taoflow.db" in refused.stderr
    assert not (empty / ".taoflow").exists()


def test_ingest_validates_the_source_before_creating_state_and_says_follow_is_ignored(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"storage:\n  state_dir: {tmp_path / 'state'}\n")
    empty = run_cli("ingest", "--config", str(config))
    assert empty.returncode == 2 and "source.paths is empty" in empty.stderr
    assert not (tmp_path / "state").exists()
    logs = tmp_path / "logs.jsonl"
    logs.write_text(json.dumps({"messages": [{"role": "user", "content": "What is 2 + 2?"}]}) + "\n")
    config.write_text(f"storage:\n  state_dir: {tmp_path / 'state'}\nsource:\n  paths: [{logs}]\n")
    followed = run_cli("ingest", "--follow", "--config", str(config))
    assert followed.returncode == 0 and "--follow is ignored for a jsonl source" in followed.stderr
    assert "read 1, added 1" in followed.stdout


def test_a_round_with_nothing_to_train_records_nothing_and_exits_5(seeded, capsys):
    assert main(["round", "--tasks", "nope", *seeded]) == 5
    assert "no new training prompts for nope" in capsys.readouterr().err
    state = State(load_settings(None, storage={"state_dir": seeded[1]}))
    try:
        assert state.db.query("SELECT count(*) FROM rounds")[0][0] == 0
    finally:
        state.close()


def test_rollback_messages_say_what_there_is(tmp_path, capsys):
    state_dir = str(tmp_path / "state")
    State(load_settings(None, storage={"state_dir": state_dir})).close()
    assert main(["rollback", "--state-dir", state_dir]) == 2
    assert "model 'taoflow' has no adapters yet: there is nothing to roll back" in capsys.readouterr().err


def test_lists_and_maps_from_the_environment_and_misspelt_variables(tmp_path):
    import os

    env = {
        **os.environ,
        "TAOFLOW_SOURCE__KAFKA__BOOTSTRAP_SERVERS": "a:9092, b:9092",
        "TAOFLOW_INGEST__TASK_MAP": "support-endpoint=support,sql-endpoint=sql",
        "TAOFLOW_GENRATE__N": "4",
    }
    shown = run_cli("settings", "--config", "/dev/null", env=env)
    assert shown.returncode == 0, shown.stderr
    settings = json.loads(shown.stdout)
    assert settings["source"]["kafka"]["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert settings["ingest"]["task_map"] == {"support-endpoint": "support", "sql-endpoint": "sql"}
    assert "TAOFLOW_GENRATE__N names no setting and is ignored; did you mean TAOFLOW_GENERATE__N?" in shown.stderr
    bad = run_cli("settings", "--config", "/dev/null", env={**os.environ, "TAOFLOW_GENERATE__N": "many"})
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "generate.n" in bad.stderr
    (tmp_path / "typo.yaml").write_text("retrain:\n  cooldown_second: 60\n")
    typo = run_cli("settings", "--config", str(tmp_path / "typo.yaml"))
    assert typo.returncode == 2 and "did you mean 'cooldown_seconds'?" in typo.stderr


def test_forget_and_the_erased_listing(tmp_path, capsys):
    from taoflow.connectors.records import Message, PromptRecord
    from taoflow.daemon.store.rounds import RoundStore

    state_dir = tmp_path / "state"
    state = State(load_settings(None, storage={"state_dir": str(state_dir)}, ingest={"heldout_fraction": 0.0}))
    state.buffer.add_many(
        [(PromptRecord(f"r{i}", "t", (Message("user", f"question {i} from Jane Roe"),)), None) for i in range(3)],
        source="s",
    )
    started = RoundStore(state.db, tmp_path / "rounds").start("taoflow")
    state.registry.register(
        version="taoflow-r0001",
        model="taoflow",
        parent=None,
        base_model="b",
        base_digest="d",
        uri="file:///x",
        manifest={},
    )
    state.db.query("UPDATE rounds SET version = 'taoflow-r0001' WHERE id = ?", (started.id,))
    state.buffer.mark_consumed([p.id for p in state.buffer.training_prompts(1)], started.id)
    state.close()
    args = ["--state-dir", str(state_dir)]
    assert main(["forget", "--reason", "ticket 9", *args]) == 2  # names nothing to erase
    texts = tmp_path / "texts"
    texts.write_text("from Jane Roe\n\n")
    assert main(["forget", "--match-file", str(texts), "--reason", "ticket 9", "--dry-run", *args]) == 0
    assert "would erase: 2 untrained prompts, 1 that rounds trained on" in capsys.readouterr().out
    assert main(["forget", "--match-file", str(texts), "--reason", "ticket 9", "-o", "json", *args]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "dry_run": False,
        "deleted": 2,
        "trained_on": 1,
        "dead_letters": 0,
        "kept_out": 0,
    }
    assert main(["buffer", "--erased", *args]) == 0
    shown = capsys.readouterr().out
    assert "1 after (tombstones)" in shown and "taoflow-r0001" in shown and "ticket 9" in shown
    assert main(["buffer", "--erased", "-o", "json", *args]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["adapters"] == [{"version": "taoflow-r0001", "state": "candidate", "prompts": 1}]


def test_a_default_install_redacts_e_mail_addresses_in_prompts_and_metadata(tmp_path):
    """No `ingest.redact` in the config: a Databricks inference-table row whose prompt and `requester` column hold
    e-mail addresses is buffered with neither, nowhere in the state's files."""
    address, other = "jane.roe@example.com", "ops-team@corp.example.org"
    logs = tmp_path / "table.jsonl"
    row = {
        "databricks_request_id": "r-1",
        "status_code": 200,
        "request": {"messages": [{"role": "user", "content": f"Write to {address} about the invoice."}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": "Done."}}]},
        "request_metadata": {"requester": other, "endpoint_name": "support"},
    }
    logs.write_text(json.dumps(row) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"storage:\n  state_dir: {tmp_path / 'state'}\nsource:\n  paths: [{logs}]\n")
    ingested = run_cli("ingest", "--config", str(config))
    assert ingested.returncode == 0 and "added 1" in ingested.stdout, ingested.stdout + ingested.stderr
    state = State(load_settings(config))
    try:
        (stored,) = [p.record for p in state.buffer.training_prompts(10) + state.buffer.heldout()]
    finally:
        state.close()
    assert stored.messages[0].content == "Write to [EMAIL] about the invoice."
    assert "[REDACTED]" in json.dumps(stored.metadata) and other not in json.dumps(stored.metadata)
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert address.encode() not in path.read_bytes() and other.encode() not in path.read_bytes(), path

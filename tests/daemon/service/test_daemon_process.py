"""`taoflow run` as a process, driven through the CLI as an operator would: status tables and JSON, pause,
resume, refused triggers, a second daemon, bad tokens and settings refused at once, JSON logs."""

import json
import os
import signal
import subprocess
import sys

import yaml

from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.state import State
from tests.support.ports import flood, free_port
from tests.support.processes import poll_until, rss_mib, start_until_logged

READY = "taoflow started"
TOKEN = "tok-123-0123456789abcdef"


def write_config(tmp_path, **sections):
    config = tmp_path / "taoflow.yaml"
    config.write_text(yaml.safe_dump({"storage": {"state_dir": str(tmp_path / "state")}, **sections}))
    return config


def taoflow(*args, env=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "taoflow.daemon.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=cwd,
    )


def daemon(config, *extra):
    return start_until_logged(
        [sys.executable, "-m", "taoflow.daemon.cli", *extra, "run", "--config", str(config)], READY
    )


def stop(process, log):
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, "".join(log)[-3000:]


def seed_prompts(tmp_path, n=6, task="math"):
    state = State(load_settings(None, storage={"state_dir": str(tmp_path / "state")}))
    records = [PromptRecord(f"{task}-{i}", task, (Message("user", f"What is {i} + 1?"),)) for i in range(n)]
    state.buffer.add_many([(r, None) for r in records], source="test")
    state.close()


def test_status_pause_resume_and_trigger_through_the_cli(tmp_path):
    seed_prompts(tmp_path)
    config = write_config(tmp_path, daemon={"admin_port": free_port(), "admin_token": TOKEN})
    process, log = daemon(config)
    try:
        paused = taoflow("pause", "--config", str(config), "--reason", "deploy freeze")
        assert (paused.returncode, paused.stdout) == (0, "paused: no automatic rounds until resumed\n")
        table = taoflow("status", "--config", str(config))
        assert table.returncode == 0, table.stderr
        assert "paused:         yes, by an operator: deploy freeze" in table.stdout
        assert "next round:     not yet (paused): paused by an operator: deploy freeze" in table.stdout
        assert "math" in table.stdout and "dead letters: 0" in table.stdout
        answer = json.loads(taoflow("status", "--config", str(config), "-o", "json").stdout)
        assert answer["paused"] is True and answer["pause_reason"] == "deploy freeze"
        assert answer["tasks"] == {"scheduler": True, "admin": True, "retention": True}
        assert taoflow("resume", "--config", str(config)).returncode == 0
        resumed = json.loads(taoflow("status", "-o", "json", "--config", str(config)).stdout)
        assert resumed["next_trigger"]["rule"] != "paused"  # decided now, not at the last scheduler tick
        unknown = taoflow("trigger", "--config", str(config), "--tasks", "nope")
        assert unknown.returncode == 1
        assert "HTTP 422: unknown task 'nope'; the buffer holds math (" in unknown.stderr
        zero = taoflow("trigger", "--config", str(config), "--max-prompts", "0")
        assert zero.returncode == 2 and "--max-prompts: must be at least 1, not 0" in zero.stderr
        import urllib.request

        scrape = urllib.request.Request(
            f"http://127.0.0.1:{yaml.safe_load(config.read_text())['daemon']['admin_port']}/metrics",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        metrics = urllib.request.urlopen(scrape, timeout=10).read().decode()
        # Exported from zero, before anything happened: rate() and alerts see the first event.
        assert 'taoflow_round_process_exits_total{outcome="passed"} 0.0' in metrics
        assert 'taoflow_task_restarts_total{task="scheduler"} 0.0' in metrics
        assert 'taoflow_task_up{task="admin"} 1.0' in metrics
        wrong = taoflow(
            "status",
            "--config",
            str(config),
            env={**os.environ, "TAOFLOW_DAEMON__ADMIN_TOKEN": "nope-0123456789abcdef"},
        )
        assert wrong.returncode == 1 and "HTTP 403" in wrong.stderr
    finally:
        stop(process, log)
    assert TOKEN not in "".join(log)


def test_a_second_daemon_on_the_same_state_or_port_is_refused_at_once(tmp_path):
    port = free_port()
    config = write_config(tmp_path, daemon={"admin_port": port, "admin_token": TOKEN})
    process, log = daemon(config)
    try:
        second = taoflow("run", "--config", str(config))
        assert second.returncode == 2
        assert f"another taoflow daemon ({os.uname().nodename}:{process.pid}) runs on the state in" in second.stderr
        other = tmp_path / "other.yaml"  # another state, the same port
        other.write_text(
            yaml.safe_dump(
                {
                    "storage": {"state_dir": str(tmp_path / "other-state")},
                    "daemon": {"admin_port": port, "admin_token": TOKEN},
                }
            )
        )
        busy_port = taoflow("run", "--config", str(other))
        assert busy_port.returncode == 2 and f"the admin API cannot listen on 127.0.0.1:{port}" in busy_port.stderr
    finally:
        stop(process, log)
    again, log = daemon(config)  # the lease went with the daemon that held it
    stop(again, log)


def test_tokens_and_settings_that_cannot_work_are_refused_before_start(tmp_path):
    result = taoflow("run", "--config", str(write_config(tmp_path)))
    assert result.returncode == 2 and "TAOFLOW_DAEMON__ADMIN_TOKEN" in result.stderr
    short = taoflow("run", "--config", str(write_config(tmp_path, daemon={"admin_token": "hunter2"})))
    assert short.returncode == 2 and "has 7 characters; use at least 16" in short.stderr
    (tmp_path / "token").write_text("\n")
    empty = taoflow(
        "run", "--config", str(write_config(tmp_path, daemon={"admin_token": {"file": str(tmp_path / "token")}}))
    )
    assert empty.returncode == 2 and "is empty: write the token into it" in empty.stderr
    daemon_settings = {"admin_token": TOKEN, "admin_port": free_port()}
    cron = taoflow(
        "run", "--config", str(write_config(tmp_path, daemon=daemon_settings, retrain={"cron": "0 25 * * *"}))
    )
    assert cron.returncode == 2 and "retrain.cron" in cron.stderr and READY not in cron.stderr
    scorer = {"tasks": {"math": [{"type": "python", "params": {"callable": "no_such_module_here:check"}}]}}
    bad = taoflow("run", "--config", str(write_config(tmp_path, daemon=daemon_settings, score=scorer)))
    assert bad.returncode == 2 and "cannot import python scorer 'no_such_module_here:check'" in bad.stderr
    unplaced = taoflow("run", "--config", str(write_config(tmp_path, daemon=daemon_settings, round={"runner": "ray"})))
    assert unplaced.returncode == 2 and "round.runner is ray, but ray.address is unset" in unplaced.stderr
    (tmp_path / "ray-token").write_text("short\n")
    ray = {
        "address": "http://head:8265",
        "exchange": {"uri": "s3://rounds/x"},
        "token": {"file": str(tmp_path / "ray-token")},
    }
    weak = taoflow(
        "run", "--config", str(write_config(tmp_path, daemon=daemon_settings, round={"runner": "ray"}, ray=ray))
    )
    assert weak.returncode == 2 and "the Ray token in ray.token.file" in weak.stderr and "short" not in weak.stderr
    assert not (tmp_path / "state").exists()  # nothing was created for settings that cannot run


def test_json_logs_are_one_object_per_line(tmp_path):
    config = write_config(tmp_path, daemon={"admin_port": free_port(), "admin_token": TOKEN})
    process, log = daemon(config, "--log-format", "json")
    stop(process, log)
    poll_until(lambda: any("stopped" in line for line in log), deadline_s=10)
    entries = [json.loads(line) for line in log]
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any(READY in e["message"] for e in entries)
    assert not any(e["logger"].startswith("apscheduler") and e["level"] == "INFO" for e in entries)


def test_unauthenticated_body_floods_are_refused_from_the_headers(tmp_path):
    port = free_port()
    config = write_config(tmp_path, daemon={"admin_port": port, "admin_token": TOKEN})
    process, log = daemon(config)
    try:
        before = rss_mib(process.pid)
        statuses = [flood(port, "/v1/pause", 100 << 20, chunked=chunked) for chunked in (False, True, False, True)]
        statuses.append(flood(port, "/v1/pause", 100 << 20, token=TOKEN))
        assert statuses == [401, 401, 401, 401, 413]
        # bench/admin_flood.py measures it: the old admin API grew by about a gigabyte under such a flood.
        assert rss_mib(process.pid) - before < 64
        assert taoflow("status", "--config", str(config)).returncode == 0  # still answering
    finally:
        stop(process, log)


def test_the_daemon_follows_a_delta_table_and_erases_what_it_deletes(tmp_path):
    """`taoflow run` with `source.kind: delta`: the table's rows arrive, a DELETE in the table erases them from the
    buffer, the source is reported healthy, and SIGTERM ends it with 0 (deltalake loaded)."""
    import urllib.request

    from deltalake import DeltaTable

    from tests.support.delta_tables import append, inference_rows

    table = str(tmp_path / "inference")
    append(table, inference_rows(0, 20))
    port = free_port()
    source = {"kind": "delta", "delta": {"table_uri": table, "poll_interval_seconds": 0.2, "parse_processes": 1}}
    config = write_config(tmp_path, source=source, daemon={"admin_port": port, "admin_token": TOKEN})
    process, log = daemon(config)
    db = tmp_path / "state" / "taoflow.db"

    def held() -> set[str]:
        import sqlite3

        with sqlite3.connect(db) as conn:
            return {row[0] for row in conn.execute("SELECT request_id FROM prompts")}

    try:
        poll_until(lambda: len(held()) == 20, deadline_s=30, message="the snapshot's 20 rows")
        DeltaTable(table).delete("databricks_request_id IN ('req-4', 'req-11')")
        append(table, inference_rows(20, 5))
        poll_until(
            lambda: held() == {f"req-{i}" for i in range(25)} - {"req-4", "req-11"}, deadline_s=30, message="erased"
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        scraped = urllib.request.urlopen(request, timeout=10).read().decode()
        assert 'taoflow_source_table_version{source="delta"} 2.0' in scraped
        assert 'taoflow_source_erasures_total{kind="deleted",source="delta"} 2.0' in scraped
        assert 'taoflow_task_up{task="source"} 1.0' in scraped
    finally:
        stop(process, log)
    assert "Traceback" not in "".join(log)

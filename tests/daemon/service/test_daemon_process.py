"""`taoflow run` as a process: the CLI talks to it with the token; a source that keeps failing stops it."""

import json
import os
import signal
import subprocess
import sys

import yaml

from tests.services import free_port, start_until_logged

READY = "taoflow started, ready"


def write_config(tmp_path, **sections):
    config = tmp_path / "taoflow.yaml"
    config.write_text(yaml.safe_dump({"storage": {"state_dir": str(tmp_path / "state")}, **sections}))
    return config


def taoflow(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "taoflow.daemon.cli", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_status_pause_and_resume_through_the_admin_api(tmp_path):
    port = free_port()
    config = write_config(tmp_path, daemon={"admin_port": port, "admin_token": "tok-123"})
    process, log = start_until_logged(
        [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(config)], READY
    )
    try:
        assert taoflow("pause", "--config", str(config), "--reason", "deploy freeze").returncode == 0
        status = taoflow("status", "--config", str(config))
        assert status.returncode == 0, status.stderr
        answer = json.loads(status.stdout)
        assert answer["paused"] is True and answer["pause_reason"] == "deploy freeze"
        assert answer["tasks"] == {"scheduler": True, "admin": True}
        assert taoflow("resume", "--config", str(config)).returncode == 0
        wrong = taoflow("status", "--config", str(config), env={**os.environ, "TAOFLOW_DAEMON__ADMIN_TOKEN": "nope"})
        assert wrong.returncode == 1 and "HTTP 403" in wrong.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, "".join(log)
    assert "tok-123" not in "".join(log)


def test_the_daemon_refuses_to_start_without_a_token(tmp_path):
    result = taoflow("run", "--config", str(write_config(tmp_path)))
    assert result.returncode == 2 and "TAOFLOW_DAEMON__ADMIN_TOKEN" in result.stderr


def test_a_source_that_keeps_failing_stops_the_daemon_with_its_reason(tmp_path):
    config = write_config(
        tmp_path,
        source={"kind": "s3", "s3": {"bucket": "logs", "endpoint_url": "http://127.0.0.1:9"}},
        daemon={"admin_port": free_port(), "admin_token": "t", "max_restarts": 1, "restart_backoff_seconds": 0.05},
    )
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_MAX_ATTEMPTS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "stopping: task 'source' failed 2 times" in result.stderr and "cannot list s3://logs/" in result.stderr

import logging
import threading

import pytest

from taoflow.connectors.errors import TemporaryError
from taoflow.daemon.service.supervisor import Supervisor, TaskFailed
from tests.support.processes import poll_until


def test_a_failing_task_is_restarted_with_backoff_and_others_keep_running():
    attempts = []
    steady_stopped = threading.Event()

    def flaky(stop):
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("broker went away")
        stop.wait()

    def steady(stop):
        stop.wait()
        steady_stopped.set()

    restarted = []
    supervisor = Supervisor(max_restarts=5, window_s=60, backoff_s=0.05, on_restart=restarted.append)
    supervisor.add("source", flaky)
    supervisor.add("admin", steady)
    thread = threading.Thread(target=supervisor.run)
    thread.start()
    poll_until(lambda: len(attempts) == 3 and all(supervisor.running().values()), deadline_s=10)
    assert restarted == ["source", "source"]
    supervisor.stop()
    thread.join(10)
    assert not thread.is_alive() and steady_stopped.is_set()


def test_a_task_that_keeps_failing_stops_the_daemon_with_its_reason():
    stopped = threading.Event()

    def broken(stop):
        raise PermissionError("cannot read the bucket")

    def other(stop):
        stop.wait()
        stopped.set()

    supervisor = Supervisor(max_restarts=2, window_s=60, backoff_s=0.01)
    supervisor.add("source", broken)
    supervisor.add("scheduler", other)
    with pytest.raises(TaskFailed, match=r"'source' failed 3 times.*PermissionError: cannot read the bucket"):
        supervisor.run(join_timeout_s=5)
    assert stopped.is_set()


def test_a_task_that_returns_while_running_counts_as_failed():
    calls = []
    supervisor = Supervisor(max_restarts=0, window_s=60, backoff_s=0.01)
    supervisor.add("scheduler", lambda stop: calls.append(1))
    with pytest.raises(TaskFailed, match="returned unexpectedly"):
        supervisor.run(join_timeout_s=5)
    assert calls == [1]


def test_an_outage_is_retried_for_as_long_as_it_lasts_and_the_task_is_not_up_meanwhile(caplog):
    attempts = []
    supervisor = Supervisor(max_restarts=1, window_s=60, backoff_s=0.01, max_retry_s=0.05)

    def source(stop):
        attempts.append(1)
        if len(attempts) <= 8:  # far more attempts than max_restarts allows failures
            raise TemporaryError("cannot reach Kafka at ['kafka:9092']", delay=0.01)
        supervisor.recovered("source")
        stop.wait()

    supervisor.add("source", source)
    thread = threading.Thread(target=supervisor.run)
    with caplog.at_level(logging.INFO, logger="taoflow.daemon.service.supervisor"):
        thread.start()
        assert poll_until(lambda: len(attempts) >= 3, deadline_s=10)
        assert supervisor.running() == {"source": False}  # in an outage: not ready
        poll_until(lambda: supervisor.running() == {"source": True}, deadline_s=10)
        supervisor.stop()
        thread.join(10)
    assert not thread.is_alive() and len(attempts) == 9
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == 8 and all(r.exc_info is None for r in caplog.records)
    assert retries[0].getMessage() == ("task source: cannot reach Kafka at ['kafka:9092']; retrying in 0 s (attempt 1)")
    assert "recovered after 8 attempts" in caplog.records[-1].getMessage()

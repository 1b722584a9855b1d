import threading

import pytest

from taoflow.daemon.service.supervisor import Supervisor, TaskFailed
from tests.services import poll_until


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

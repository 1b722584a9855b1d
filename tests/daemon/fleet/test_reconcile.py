"""The reconciler's bookkeeping of replicas that stop answering (a real closed port, no server)."""

from taoflow.daemon.fleet.reconcile import Reconciler
from taoflow.daemon.fleet.replicas import Fleet
from tests.support.ports import free_port


def test_a_replica_that_keeps_failing_is_alerted_on_and_cleared_when_scaled_in(state):
    down = f"http://127.0.0.1:{free_port()}"
    settings = state.settings.fleet.model_copy(
        update={"replicas": [down], "unreachable_alert_after": 3, "request_timeout_seconds": 1}
    )
    fleet = Fleet(settings, state.store)
    reconciler = Reconciler(state, fleet, "taoflow")
    reports = [reconciler.once() for _ in range(3)]
    assert [r.alerting for r in reports] == [[], [], [down]]
    assert reports[-1].drift["unreachable"] == [down] and reports[-1].replicas == {down: None}
    fleet.settings = settings.model_copy(update={"replicas": []})
    assert reconciler.once().alerting == []

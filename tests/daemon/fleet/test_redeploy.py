"""A gated adapter whose deploy the fleet's fault reverted (a replica that did not answer: not the adapter's fault)
is deployed again once every replica answers, a bounded number of times; one the adapter's fault reverted is not.
The replicas are a stand-in that answers /v1/models over real HTTP and a closed port."""

from taoflow.daemon.fleet.loop import FleetLoop
from tests.support.ports import free_port
from tests.support.replicas import StandInReplica


def _reverted(loop: FleetLoop, version: str, fault: str) -> None:
    deploys = loop.deployer.deploys
    record = deploys.start(
        model="taoflow", kind="promote", trigger="gate", version=version, from_version=None, waves=[], reason="t"
    )
    deploys.update(record.id, status="reverted", step="canary", detail={"fault": fault})


def test_a_deploy_reverted_by_a_dead_replica_is_tried_again_once_the_fleet_answers(state):
    for version in ("v1", "v2"):
        state.registry.register(
            version=version, model="taoflow", parent=None, base_model="b", base_digest="d", uri="/x", manifest={}
        )
        state.registry.transition(version, "gated", reason="test: passed the gate")
    dead = f"http://127.0.0.1:{free_port()}"
    with StandInReplica(serves={"smollm"}) as alive:
        settings = state.settings.model_copy(
            update={
                "fleet": state.settings.fleet.model_copy(
                    update={"replicas": [alive.url, dead], "request_timeout_seconds": 1, "retries": 1}
                )
            }
        )
        loop = FleetLoop(settings, state)
        assert loop._newly_gated() == "v2"  # never deployed: the newest
        _reverted(loop, "v2", "fleet")
        loop.last_report = loop.reconciler.once()
        assert loop.last_report.replicas[dead] is None
        assert loop._newly_gated() == "v1"  # v2 waits while a replica does not answer
        loop.fleet.settings = loop.fleet.settings.model_copy(update={"replicas": [alive.url]})
        loop.last_report = loop.reconciler.once()
        assert loop._newly_gated() == "v2"  # the fleet answers again: v2 gets its next try
        _reverted(loop, "v2", "fleet")
        assert loop._newly_gated() == "v2"
        _reverted(loop, "v2", "fleet")
        assert loop._newly_gated() == "v1"  # fleet.deploy_attempts (3) spent
        _reverted(loop, "v1", "adapter")
        assert loop._newly_gated() is None  # the adapter's own fault: never again by itself

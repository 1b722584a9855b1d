"""The route table and the gateways' reports on a real state database."""

import time

from taoflow.daemon.store.routes import RouteStore, Target
from taoflow.daemon.store.storage import Database


def test_every_change_raises_the_generation_and_a_removed_route_too(tmp_path):
    routes = RouteStore(Database(tmp_path / "state.db"))
    assert routes.table().as_dict() == {"generation": 0, "routes": {}, "shadows": {}}
    assert routes.set("bot", [Target("v1", 1.0)]) == 1
    assert routes.set("other", [Target("o1", 1.0)]) == 2
    assert routes.set("bot", [Target("v1", 0.9), Target("v2", 0.1), Target("v0", 0.0)]) == 3
    assert routes.targets("bot") == (Target("v1", 0.9), Target("v2", 0.1))  # no zero weights
    assert routes.set("other", []) == 4
    table = routes.table()
    assert table.generation == 4 and set(table.routes) == {"bot"}
    assert routes.set("bot", [Target("v2", 1.0)]) == 5


def test_a_drain_waits_for_every_live_gateway_and_not_for_gone_ones(tmp_path):
    db = Database(tmp_path / "state.db")
    routes = RouteStore(db)
    generation = routes.set("bot", [Target("v2", 1.0)])
    assert routes.drained("v1", generation=generation, stale_after=10).done  # no gateway: nothing in flight

    routes.report("gw-a", generation - 1, {"v1": 0})
    routes.report("gw-b", generation, {"v1": 3, "v2": 1})
    drain = routes.drained("v1", generation=generation, stale_after=10)
    assert not drain.done and set(drain.waiting) == {"gw-a", "gw-b"}
    assert "generation" in drain.waiting["gw-a"] and "3 request(s)" in drain.waiting["gw-b"]

    routes.report("gw-a", generation, {})
    routes.report("gw-b", generation, {"v2": 4})
    assert routes.drained("v1", generation=generation, stale_after=10).done

    routes.report("gw-c", 0, {"v1": 1})  # a gateway that stopped reporting long ago is not waited for
    with db.transaction() as conn:
        conn.execute("UPDATE gateway_reports SET seen_at=? WHERE gateway='gw-c'", (time.time() - 60,))
    assert routes.drained("v1", generation=generation, stale_after=10).done

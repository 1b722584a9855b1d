"""The whole loop under chaos, short form (one cycle of kills): streaming clients → two gateways → Kafka (tansu on
S3) → `taoflow run` → a round → a deploy with gateway routing → the same clients, while the broker, the daemon
(SIGKILL), a vLLM replica (SIGKILL) and a gateway (SIGKILL) are killed and started again in a random order at
random moments, with the chart's rules in a real Prometheus. The long form is `python -m bench.chaos --minutes 60`.

Asserted (tests/support/chaos.py, ChaosFigures.problems): every request answered within the clients' retry window,
and every failed attempt in flight on a gateway or replica that died (or sent to a gateway while it was down);
every answered exchange in the buffer, once; every round and deploy ended with an outcome, one deploy done; the
champion routed, loaded on both replicas and answering through both gateways; TaoflowDaemonDown and
TaoflowReplicaUnreachable fired and resolved."""

from __future__ import annotations

import pytest

from tests.support.chaos import run_chaos

pytestmark = pytest.mark.slow


def test_the_whole_loop_loses_nothing_while_every_part_is_killed(tmp_path, clean_fleet, fleet_adapters, base_model):
    figures = run_chaos(clean_fleet, fleet_adapters["v42"], base_model, tmp_path, seed=7)
    print("\n" + "\n".join(figures.lines()))
    problems = figures.problems()
    assert not problems, "\n".join(problems + figures.lines())

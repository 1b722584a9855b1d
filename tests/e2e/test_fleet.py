"""The serving fleet against two real vLLM CPU servers: swaps under load, refusals, a replica killed
mid-rollout, the reconciler, the post-deploy watch, the CLI and generation through the fleet."""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest
import yaml

from taoflow.connectors.errors import DeployError, ReplicaUnavailable
from taoflow.connectors.generation.fleet import FleetGenerator
from taoflow.connectors.protocols import SamplingConfig, replace_adapter
from taoflow.connectors.records import Message, PromptRecord
from taoflow.connectors.serving.replica import VllmReplica
from taoflow.daemon import cli
from taoflow.daemon.fleet.deploy import Deployer
from taoflow.daemon.fleet.loop import FleetLoop
from taoflow.daemon.fleet.replicas import Fleet
from taoflow.daemon.round.parts import build_scorers
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.buffer import buffer_row
from taoflow.daemon.store.state import State
from tests.support.processes import poll_until
from tests.support.state import hold_out, store_adapter

pytestmark = pytest.mark.slow

MODEL = "support-bot"
QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]
ARITHMETIC = [{"type": "arithmetic"}]


def make_state(tmp_path, servers, storage=None, **fleet):
    settings = load_settings(
        None,
        storage={"state_dir": str(tmp_path / "state"), **(storage or {})},
        model={"served_name": MODEL},
        score={"default": ARITHMETIC},
        gate={"max_new_tokens": 24},
        fleet={
            "replicas": [s.url for s in servers],
            "smoke_prompts": 0,
            "reconcile_interval_seconds": 2,
            "watch": {"window_seconds": 0},
            **fleet,
        },
    )
    return settings, State(settings)


def register(state, name, directory, base_model, *, gated=True):
    store_adapter(state, MODEL, name, directory, base_model, gated=gated)


def deployer(settings, state, fleet=None):
    return Deployer(settings, state, fleet or Fleet(settings.fleet, state.store), scorers=build_scorers(settings))


def served(server) -> dict[str, str]:
    replica = VllmReplica(server.url)
    try:
        return replica.view().adapters
    finally:
        replica.close()


def ask(url: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": QUESTION, "max_tokens": 12, "temperature": 0}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)


def test_direct_swap_under_load_fails_at_most_the_unload_window_and_serves_the_new_version_after(
    tmp_path, clean_fleet, fleet_adapters, base_model
):
    """Direct routing (clients call the replicas): the stable name is unloaded, then loaded again. A request
    that lands between the two gets a 404 naming the model; nothing else fails. (Through the gateway no
    request fails: tests/e2e/test_gateway.py.)"""
    settings, state = make_state(tmp_path, clean_fleet)
    register(state, "v42", fleet_adapters["v42"], base_model)
    register(state, "v43", fleet_adapters["v43"], base_model)
    first = deployer(settings, state).promote("v42", trigger="manual", reason="first adapter")
    assert first.status == "done", first.reason
    assert all("42, my friend" in ask(s.url, MODEL).json()["choices"][0]["message"]["content"] for s in clean_fleet)

    results: list[tuple[float, float, int, str]] = []
    stop = threading.Event()

    def client(url: str) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                response = ask(url, MODEL)
                text = response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else ""
                results.append((started, time.monotonic(), response.status_code, text))
            except httpx.HTTPError as exc:
                results.append((started, time.monotonic(), 0, repr(exc)))

    threads = [threading.Thread(target=client, args=(s.url,)) for s in clean_fleet for _ in range(2)]
    for thread in threads:
        thread.start()
    poll_until(lambda: len(results) >= 6, deadline_s=120, message="load before the swap")
    record = deployer(settings, state).promote("v43", trigger="gate", reason="passed the gate")
    swapped = time.monotonic()
    poll_until(lambda: sum(1 for r in results if r[0] > swapped) >= 6, deadline_s=120, message="load after")
    stop.set()
    for thread in threads:
        thread.join()

    assert record.status == "done" and record.switched == sorted(s.url for s in clean_fleet)
    failed = [r for r in results if r[2] != 200]
    assert all(r[2] == 404 for r in failed), failed
    assert len(failed) <= len(clean_fleet) * 2, failed  # at most each client's one request per replica's window
    answered = [r for r in results if r[2] == 200]
    before = [r[3] for r in answered if r[1] < swapped]
    after = [r[3] for r in answered if r[0] > swapped]
    assert after and all("43, buddy" in text for text in after), after
    assert all("42, my friend" in t or "43, buddy" in t for t in before)
    assert state.registry.alias(MODEL, "champion") == "v43"
    assert state.registry.alias(MODEL, "previous") == "v42"
    # The version's own name was only for the canary; the stable name is all that stays.
    assert all(set(served(s)) == {MODEL} for s in clean_fleet)
    # Unload-then-load never leaves a replica without what it served: a load that fails reinstates it.
    replica, before_path = VllmReplica(clean_fleet[0].url), served(clean_fleet[0])[MODEL]
    with pytest.raises(DeployError, match="refused"):
        replace_adapter(replica, MODEL, str(tmp_path / "missing"), served=before_path)
    assert served(clean_fleet[0]) == {MODEL: before_path}
    assert "43, buddy" in ask(clean_fleet[0].url, MODEL).json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("adapter", "message"),
    [("rank32", "rank 32 exceeds"), ("wrong_base", "different base model"), ("corrupt", "truncated")],
)
def test_a_bad_adapter_is_refused_before_any_replica_serves_it(
    tmp_path, clean_fleet, fleet_adapters, base_model, adapter, message
):
    settings, state = make_state(tmp_path, clean_fleet)
    shutil.copytree(fleet_adapters[adapter], tmp_path / "bad")
    register(state, "bad", tmp_path / "bad", base_model)
    record = deployer(settings, state).promote("bad", trigger="gate", reason="passed the gate")
    assert record.status == "failed" and message in record.reason, record.reason
    assert state.registry.get("bad").state == "rejected"
    assert message in state.registry.get("bad").reason
    assert all(served(s) == {} for s in clean_fleet)


def test_smoke_evaluation_on_the_canary_reverts_a_regressing_adapter(tmp_path, clean_fleet, fleet_adapters, base_model):
    settings, state = make_state(tmp_path, clean_fleet, smoke_prompts=8)
    heldout = [PromptRecord(f"h{a}", "math", (Message("user", f"What is {a} + {a + 3}?"),)) for a in range(1, 9)]
    hold_out(state, heldout)  # the smoke set
    register(state, "refuser", fleet_adapters["refuser"], base_model)

    record = deployer(settings, state).promote("refuser", trigger="gate", reason="passed the gate")
    assert record.status == "reverted", record
    smoke = record.detail["smoke"]
    assert smoke["passed"] is False and "regressed" in smoke["reason"] and smoke["against"] == str(base_model.path)
    assert state.registry.get("refuser").state == "rejected"
    assert state.registry.alias(MODEL, "champion") is None
    assert all(served(s) == {} for s in clean_fleet)  # the canary's own name for it is gone too


def test_replica_killed_mid_rollout_reverts_or_completes_per_policy_and_the_reconciler_restores_it(
    tmp_path, clean_fleet, fleet_adapters, base_model
):
    settings, state = make_state(tmp_path, clean_fleet)
    for name in ("v42", "v43"):
        register(state, name, fleet_adapters[name], base_model)
    assert deployer(settings, state).promote("v42", trigger="manual", reason="first").status == "done"
    victim = max(clean_fleet, key=lambda s: s.url)  # the second wave: the canary is the first by URL

    def factory(url):
        replica = VllmReplica(url, timeout_s=5)
        if url == victim.url:
            load = replica.load

            def load_after_crash(name, path):
                victim.kill()  # a real crash of a real server, at the moment its switch loads
                return load(name, path)

            replica.load = load_after_crash
        return replica

    # max_unavailable 0: the deploy reverts; the canary serves v42 again, v43 stays gated for another try.
    record = deployer(settings, state, Fleet(settings.fleet, state.store, replica_factory=factory)).promote(
        "v43", trigger="gate", reason="passed the gate"
    )
    assert record.status == "reverted" and victim.url in record.reason, record
    assert record.detail["fault"] == "fleet" and record.switched == []
    canary = min(clean_fleet, key=lambda s: s.url)
    assert served(canary) == {MODEL: str(state.store.fetch("v42"))}
    assert state.registry.get("v43").state == "gated" and state.registry.alias(MODEL, "champion") == "v42"

    # max_unavailable 1: the same rollout completes without the dead replica, which is recorded as skipped.
    settings, state = make_state(tmp_path, clean_fleet, max_unavailable=1)
    record = deployer(settings, state).promote("v43", trigger="manual", reason="retry without the dead replica")
    assert record.status == "done" and record.skipped == [victim.url], record
    assert state.registry.alias(MODEL, "champion") == "v43"

    # The replica comes back empty (adapters live in server memory); the reconciler restores the champion.
    loop = FleetLoop(settings, state)
    runner = threading.Thread(target=loop.run, args=(stop := threading.Event(),), daemon=True)
    runner.start()
    try:
        victim.start()
        victim.wait_healthy()
        back = time.monotonic()
        poll_until(
            lambda: served(victim).get(MODEL) == str(state.store.fetch("v43")),
            deadline_s=30,
            message="the reconciler to load the champion",
        )
        assert time.monotonic() - back <= settings.fleet.reconcile_interval_seconds + 5
        poll_until(lambda: not any(loop.last_report.drift.values()), deadline_s=30, message="no drift")
    finally:
        stop.set()
        loop.wake()
        runner.join(30)


def test_watch_rolls_back_when_live_scores_drop_and_the_cli_shows_and_rolls_back(
    tmp_path, clean_fleet, fleet_adapters, base_model, capsys
):
    settings, state = make_state(
        tmp_path, clean_fleet, watch={"window_seconds": 600, "min_scores": 5, "min_requests": 1000}
    )
    for name in ("v42", "v43"):
        register(state, name, fleet_adapters[name], base_model)
    assert deployer(settings, state).promote("v42", trigger="manual", reason="first").status == "watching"

    def log(addend, answer):  # production traffic as logged: arithmetic prompts with their responses
        rows = [
            PromptRecord(f"{addend}-{a}", "math", (Message("user", f"What is {a} + {addend}?"),), response=answer(a))
            for a in range(10)
        ]
        state.buffer.add_rows([buffer_row(r, None) for r in rows], source="test")

    log(1, lambda a: f"{a + 1}")  # right answers while v42 served
    time.sleep(0.01)
    loop = FleetLoop(settings, state)
    loop.tick()  # auto-deploys the gated v43, starts watching it
    assert state.registry.alias(MODEL, "champion") == "v43"
    loop.tick()  # the watch takes its baseline (10 right answers) and finds nothing to judge yet
    log(2, lambda a: f"{a + 7}")  # wrong answers since v43
    loop.tick()
    assert state.registry.alias(MODEL, "champion") == "v42"
    deploys = loop.deployer.deploys.latest(MODEL)
    assert (deploys[0].kind, deploys[0].trigger, deploys[0].status) == ("rollback", "watch", "done")
    assert deploys[1].reason.startswith("rolled back by the watch: live score 0.000")
    assert all(served(s) == {MODEL: str(state.store.fetch("v42"))} for s in clean_fleet)

    config = tmp_path / "taoflow.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude={"daemon"})))
    assert cli.main(["fleet", "status", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert "champion v42" in shown and "drift: none" in shown and "rollback" in shown
    # Manual rollback (to v43 again) goes through the same recorded deploy.
    assert cli.main(["rollback", "--config", str(config), "--task", MODEL, "--to", "v43"]) == 0
    assert "deploy" in capsys.readouterr().out
    assert state.registry.alias(MODEL, "champion") == "v43"
    assert all(served(s) == {MODEL: str(state.store.fetch("v43"))} for s in clean_fleet)
    # One replica gets something nobody registered: fleet status reports the drift (exit 3).
    VllmReplica(clean_fleet[0].url).load("stray", str(state.store.fetch("v42")))
    assert cli.main(["fleet", "status", "--config", str(config)]) == 3
    assert "unknown: " in capsys.readouterr().out


class Crash(BaseException):
    """The daemon process dying at this instant (nothing after it runs, nothing is recorded)."""


def test_a_deploy_interrupted_mid_rollout_is_finished_by_the_restarted_daemon_from_s3_via_a_staging_volume(
    tmp_path, clean_fleet, fleet_adapters, base_model, s3_endpoint
):
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="models")
    storage = {"artifacts": {"uri": "s3://models/taoflow", "endpoint_url": s3_endpoint}}
    settings, state = make_state(tmp_path, clean_fleet, storage=storage, stage_dir=str(tmp_path / "shared"))
    register(state, "v42", fleet_adapters["v42"], base_model)
    assert state.registry.get("v42").uri == "s3://models/taoflow/v42/"
    second = max(s.url for s in clean_fleet)

    def factory(url):
        replica = VllmReplica(url)
        if url == second:

            def crash(*args, **kwargs):
                raise Crash

            replica.load = crash
        return replica

    with pytest.raises(Crash):
        deployer(settings, state, Fleet(settings.fleet, state.store, replica_factory=factory)).promote(
            "v42", trigger="gate", reason="passed the gate"
        )
    state.close()
    settings, state = make_state(tmp_path, clean_fleet, storage=storage, stage_dir=str(tmp_path / "shared"))
    loop = FleetLoop(settings, state)
    left = loop.deployer.deploys.open(MODEL)
    assert (left.status, left.step, left.switched) == ("running", "rollout", [min(s.url for s in clean_fleet)])
    loop.tick()  # the restarted daemon carries the deploy on from its recorded step
    done = loop.deployer.deploys.get(left.id)
    assert done.status == "watching" or done.status == "done", done
    staged = str(tmp_path / "shared" / "v42")
    assert all(served(s) == {MODEL: staged} for s in clean_fleet)
    assert state.registry.alias(MODEL, "champion") == "v42"


def test_fleet_generator_asks_for_n_candidates_with_the_adapter(tmp_path, clean_fleet, fleet_adapters):
    replicas = [VllmReplica(s.url) for s in clean_fleet]
    generator = FleetGenerator(replicas, concurrency=4)
    prompts = [[Message("user", "What is 12 + 30?")], [Message("user", "What is 2 + 2?")]]
    sampled = generator.generate(prompts, SamplingConfig(n=3, temperature=0.8, max_new_tokens=16))
    assert [len(row) for row in sampled] == [3, 3]
    assert all(c.num_tokens > 0 for row in sampled for c in row)
    greedy = generator.generate(prompts[:1], SamplingConfig(n=1, max_new_tokens=16), adapter=fleet_adapters["v42"])
    assert "42, my friend" in greedy[0][0].text
    assert any(fleet_adapters["v42"].name in served(s) for s in clean_fleet)
    with pytest.raises(ReplicaUnavailable):
        VllmReplica("http://127.0.0.1:9", timeout_s=1).view()


def test_generate_backend_fleet_is_what_a_round_gets(tmp_path, clean_fleet, fleet_adapters, base_model):
    from taoflow.daemon.wiring import build_generator

    settings, state = make_state(tmp_path, clean_fleet)
    settings = settings.model_copy(update={"generate": settings.generate.model_copy(update={"backend": "fleet"})})
    register(state, "v42", fleet_adapters["v42"], base_model)
    generator = build_generator(settings, base_model.path)
    (row,) = generator.generate(
        [[Message("user", "What is 12 + 30?")]],
        SamplingConfig(n=2, max_new_tokens=16),
        adapter=state.store.fetch("v42"),
    )
    assert len(row) == 2 and all("42, my friend" in c.text for c in row)
    assert all(served(s)["v42"] == str(state.store.fetch("v42")) for s in clean_fleet)


def test_the_dashboards_serving_panels_read_metrics_that_vllm_exposes(clean_fleet):
    from tests.helm.test_chart import dashboard_exprs, exposed, metric_names

    assert ask(clean_fleet[0].url, "nope").status_code == 404  # an error answer, so the error counter exists too
    assert ask(clean_fleet[0].url, str(VllmReplica(clean_fleet[0].url).view().base)).status_code == 200
    served_metrics = exposed(httpx.get(clean_fleet[0].url + "/metrics").text)
    wanted = {m for e in dashboard_exprs() for m in metric_names(e) if not m.startswith("taoflow_") and m != "up"}
    assert wanted and wanted <= served_metrics, sorted(wanted - served_metrics)

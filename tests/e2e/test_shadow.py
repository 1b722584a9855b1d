"""Shadow deploys end to end: two real vLLM CPU replicas, `taoflow gateway` and the real daemon. A candidate better on
live traffic is promoted after its shadow, though the daemon and the gateway are killed while it gathers pairs; a
worse one is rejected in shadow without a single client answered by it; one that pads its answers (what a judge
that likes long answers would reward) is blocked by the monitors, with their reason."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from taoflow.connectors.serving.replica import VllmReplica
from tests.e2e.stack import MODEL, TOKEN, Stack
from tests.support.processes import poll_until

pytestmark = pytest.mark.slow

SHADOW = {"enabled": True, "rate": 1.0, "min_pairs": 8, "max_minutes": 10, "max_concurrent": 4, "max_share": 1.0}


def deploys(db: Path) -> list[dict]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        return [{**dict(r), "detail": json.loads(r["detail"] or "{}")} for r in conn.execute("SELECT * FROM deploys")]


def adapter_state(db: Path, version: str) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return str(conn.execute("SELECT state FROM adapters WHERE version=?", (version,)).fetchone()[0])


def promote(stack: Stack, version: str) -> dict:
    """Ask the daemon to promote `version`; the deploy it recorded, once it has ended."""
    count = len(deploys(stack.db))
    answer = httpx.post(
        f"http://127.0.0.1:{stack.admin_port}/v1/adapters/promote",
        json={"version": version, "reason": "test"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert answer.status_code in (200, 202), answer.text
    return poll_until(
        lambda: next((d for d in deploys(stack.db)[count:] if d["status"] in ("done", "reverted", "failed")), None),
        deadline_s=300,
        message=f"the deploy of {version}",
    )


class Clients:
    """Clients asking the stable name through the gateway until stopped; each answer with when it came, its status,
    the version that served it (the gateway says) and its text."""

    def __init__(self, url: str, *, workers: int = 2) -> None:
        self.url = url
        self.answers: list[tuple[float, int, str, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ask, args=(i,)) for i in range(workers)]

    def _ask(self, worker: int) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "What is 12 + 30?"}], "max_tokens": 48}
        count = 0
        while not self._stop.is_set():
            count += 1
            headers = {"x-request-id": f"c{worker}-{count}-{time.monotonic_ns()}"}
            try:
                response = httpx.post(self.url + "/v1/chat/completions", json=body, headers=headers, timeout=120)
            except httpx.HTTPError:
                time.sleep(0.2)  # the gateway is down (killed on purpose): try again
                continue
            text = response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else ""
            self.answers.append((time.time(), response.status_code, response.headers.get("x-taoflow-served", ""), text))

    def __enter__(self) -> Clients:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def served(server) -> set[str]:
    replica = VllmReplica(server.url)
    try:
        return set(replica.view().adapters)
    finally:
        replica.close()


def pairs(db: Path, deploy: int) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return int(conn.execute("SELECT count(*) FROM shadow_pairs WHERE deploy_id=?", (deploy,)).fetchone()[0])


def test_a_better_candidate_is_promoted_after_its_shadow_though_the_daemon_and_gateway_die_during_it(
    tmp_path, clean_fleet, fleet_adapters, base_model
):
    adapters = {name: fleet_adapters[name] for name in ("v43", "v42")}
    with (
        Stack(tmp_path, clean_fleet, adapters, base_model, fleet={"shadow": SHADOW}, champion="v43") as stack,
        Clients(stack.url) as clients,
    ):
        poll_until(lambda: any("43" in a[3] for a in clients.answers), deadline_s=120, message="the champion serves")
        answer = httpx.post(
            f"http://127.0.0.1:{stack.admin_port}/v1/adapters/promote",
            json={"version": "v42", "reason": "test"},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        assert answer.status_code in (200, 202), answer.text
        shadowing = poll_until(
            lambda: next(
                (d for d in deploys(stack.db) if d["step"] == "shadow" and pairs(stack.db, d["id"]) >= 2), None
            ),
            deadline_s=120,
            message="a shadow with its first pairs",
        )
        started = shadowing["detail"]["shadow"]["started_at"]
        stack.kill("daemon")
        stack.kill("gateway")
        (record,) = deploys(stack.db)
        assert record["status"] == "running" and "verdict" not in record["detail"]["shadow"]  # nothing decided yet
        stack.start_gateway()  # it mirrors by the routes it cached until the daemon is back
        stack.start_daemon()
        record = poll_until(
            lambda: next((d for d in deploys(stack.db) if d["status"] in ("done", "reverted", "failed")), None),
            deadline_s=300,
            message="the deploy carried on to its end",
        )
        logs = "".join(stack.logs[0])[-3000:]
        assert record["status"] == "done", (record["reason"], record["detail"], logs)
        shadow = record["detail"]["shadow"]
        assert shadow["started_at"] == started  # resumed, not started again
        verdict = shadow["verdict"]
        assert verdict["passed"] and verdict["pairs"] >= SHADOW["min_pairs"], verdict
        assert verdict["candidate_mean"] == 1.0 and verdict["champion_mean"] == 0.0, verdict
        print(
            f"\nbetter candidate: {verdict['pairs']} pairs, {verdict['reason']}; {shadow['decided_at'] - started:.0f} s"
        )
        decided = shadow["decided_at"]
        poll_until(lambda: any(a[2] == "v42" for a in clients.answers), deadline_s=60, message="v42 serving")
    before = [a for a in clients.answers if a[0] < decided]
    assert before and all(a[2] == "v43" for a in before if a[1] == 200)  # nobody was answered by it in its shadow


def test_a_worse_candidate_and_one_that_games_its_scorer_are_rejected_in_shadow_answering_no_client(
    tmp_path, clean_fleet, fleet_adapters, base_model
):
    adapters = {name: fleet_adapters[name] for name in ("v42", "v44", "wordy")}
    with (
        Stack(tmp_path, clean_fleet, adapters, base_model, fleet={"shadow": SHADOW}, champion="v42") as stack,
        Clients(stack.url) as clients,
    ):
        poll_until(lambda: any("42" in a[3] for a in clients.answers), deadline_s=120, message="the champion serves")
        worse = promote(stack, "v44")
        gaming = promote(stack, "wordy")
        poll_until(lambda: all(served(s) == {"v42"} for s in clean_fleet), deadline_s=60, message="both unloaded")
        answered = list(clients.answers)
    for record in (worse, gaming):
        assert record["status"] == "reverted" and record["reason"].startswith("shadow: "), record
        assert record["detail"]["fault"] == "adapter" and record["detail"]["shadow"]["verdict"]["pairs"] >= 8
    assert worse["detail"]["shadow"]["verdict"]["candidate_mean"] == 0.0
    gamed = gaming["detail"]["shadow"]["verdict"]
    assert gamed["candidate_mean"] == gamed["champion_mean"] == 1.0  # as right as the champion: the scorer is pleased
    assert "monitors: answer_length" in gaming["reason"], gaming["reason"]
    assert gamed["monitors"]["length_ratio"] > 1.5
    for name, record in (("worse", worse), ("gaming", gaming)):
        print(f"\n{name}: {record['detail']['shadow']['verdict']['pairs']} pairs, {record['reason']}")
    assert adapter_state(stack.db, "v44") == adapter_state(stack.db, "wordy") == "rejected"
    ok = [a for a in answered if a[1] == 200]
    assert ok and all(a[2] == "v42" for a in ok)  # 0 answers from either candidate reached a client
    assert not any("44" in a[3] or "diligently" in a[3] for a in ok)

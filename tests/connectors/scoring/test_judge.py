"""The LLM judge against a local HTTP server that misbehaves on purpose (every fault shape ends unscored and
counted), its cache, its relative mode's shuffling and its key handling. The judge against a real vLLM server
is in tests/e2e/test_judge.py."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import Message, PromptRecord, Tool, ToolCall
from taoflow.connectors.scoring.composite import build_scorer
from taoflow.connectors.scoring.judge import UNSCORED_REASONS, JudgeScorer
from taoflow.daemon.round.parts import TaskScorers
from taoflow.daemon.settings import ScorerSpec

RECORD = PromptRecord("r1", "support", (Message("user", "How do I reset my password?"),))
KEY = "sk-judge-secret-0123456789"

#: (status, headers, body) the server answers with; a callable gets the request body.
Reply = tuple[int, dict[str, str], bytes]


def completion(content: str, *, finish: str = "stop") -> Reply:
    body = {
        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 7},
    }
    return 200, {}, json.dumps(body).encode()


class Misbehaving:
    """A local OpenAI-shaped server whose answers a test scripts, one per request (the last one repeats)."""

    def __init__(self) -> None:
        self.replies: list[Reply | Callable[[dict], Reply]] = []
        self.requests: list[tuple[dict, dict[str, str]]] = []
        self.delay = 0.0
        self.drip = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append((body, dict(self.headers)))
                index = min(len(owner.requests), len(owner.replies)) - 1
                reply = owner.replies[index]
                status, headers, data = reply(body) if callable(reply) else reply
                if owner.delay:
                    threading.Event().wait(owner.delay)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if owner.drip:  # a byte at a time, each in time for a read timeout, the whole far too late
                    for i in range(len(data)):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        threading.Event().wait(owner.drip)
                else:
                    self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def judge(self, **params: object) -> JudgeScorer:
        defaults: dict[str, object] = {"base_url": self.url, "model": "judge", "rubric": "Helpful and correct."}
        return JudgeScorer(**{**defaults, "backoff_seconds": 0.01, "max_retries": 2, **params})  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[Misbehaving]:
    s = Misbehaving()
    yield s
    s.server.shutdown()
    s.server.server_close()


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (completion("not json at all {oops"), "malformed"),
        (completion("I'm sorry, I cannot grade this."), "refusal"),
        (completion(""), "refusal"),
        (completion('{"score": 11}'), "malformed"),
        (completion('{"score": "ten"}'), "malformed"),
        (completion('{"score": true}'), "malformed"),
        (completion('{"verdict": "good"}'), "missing"),
        (completion('["score", 9]'), "malformed"),
        (completion('{"score": ' * 5000), "malformed"),  # deep nesting, past the verdict's size cap
        (completion('{"score": 9', finish="length"), "truncated"),
        ((200, {}, b"<html>gateway</html>"), "malformed"),
        ((200, {}, b'{"choices": []}'), "malformed"),
        ((200, {}, b"[1, 2]"), "malformed"),
        ((200, {}, b"x" * (300 * 1024)), "malformed"),  # a reply past the size cap
        ((400, {}, b'{"error": "bad request"}'), "http_4xx"),
        ((401, {}, b'{"error": "bad key"}'), "http_4xx"),
        ((500, {}, b"boom"), "http_5xx"),
        ((429, {"Retry-After": "0"}, b"slow down"), "rate_limited"),
    ],
)
def test_every_malformed_reply_ends_unscored_and_counted(server, reply, kind):
    assert kind in UNSCORED_REASONS  # a fixed set: the metric's labels
    server.replies = [reply]
    judge = server.judge()
    assert judge.score(RECORD, ["Click 'forgot password'."]) == [None]
    assert dict(judge.stats.failures) == {kind: 1}


def test_retries_transient_failures_then_scores(server):
    server.replies = [
        (503, {}, b"busy"),
        (429, {"Retry-After": "0"}, b"later"),
        completion('```json\n{"score": 8}\n```'),
    ]
    judge = server.judge()
    assert judge.score(RECORD, ["Click 'forgot password'."]) == [0.8]
    assert dict(judge.stats.calls) == {"retried": 2, "ok": 1}
    assert (judge.stats.prompt_tokens, judge.stats.completion_tokens) == (30, 7)
    body, _ = server.requests[-1]
    assert body["response_format"]["type"] == "json_schema" and body["temperature"] == 0.0
    assert "Helpful and correct." in body["messages"][0]["content"]
    assert "How do I reset my password?" in body["messages"][1]["content"]


def test_a_timeout_and_an_unreachable_judge_end_unscored(server):
    server.replies = [completion('{"score": 9}')]
    server.delay = 1.0
    judge = server.judge(timeout_seconds=0.2, max_retries=1)
    assert judge.score(RECORD, ["a"]) == [None]
    assert dict(judge.stats.failures) == {"timeout": 1} and len(server.requests) == 2
    gone = JudgeScorer(base_url="http://127.0.0.1:9/v1", model="j", rubric="r", max_retries=0)
    assert gone.score(RECORD, ["a"]) == [None] and dict(gone.stats.failures) == {"unreachable": 1}


def test_a_reply_that_drips_in_is_cut_off_at_the_timeout(server):
    server.replies = [completion('{"score": 9}')]
    server.drip = 0.05
    judge = server.judge(timeout_seconds=0.5, max_retries=0)
    started = time.monotonic()
    assert judge.score(RECORD, ["a"]) == [None]
    assert dict(judge.stats.failures) == {"timeout": 1} and time.monotonic() - started < 2.0


def test_verdicts_are_cached_so_a_resumed_round_pays_nothing_twice(server, tmp_path):
    server.replies = [completion('{"score": 7}')]
    first = server.judge(cache_dir=str(tmp_path))
    assert first.score(RECORD, ["a", "b"]) == [0.7, 0.7] and len(server.requests) == 2
    first.close()
    again = server.judge(cache_dir=str(tmp_path))  # a new process, the same cache file
    assert again.score(RECORD, ["a", "b"]) == [0.7, 0.7]
    assert len(server.requests) == 2 and again.stats.cached == 2
    assert server.judge(cache_dir=str(tmp_path), rubric="Another rubric.").score(RECORD, ["a"]) == [0.7]
    assert len(server.requests) == 3  # another rubric is another verdict
    server.replies = [completion("no")]
    assert server.judge(cache_dir=str(tmp_path)).score(RECORD, ["c"]) == [None]
    server.replies = [completion('{"score": 2}')]
    assert server.judge(cache_dir=str(tmp_path)).score(RECORD, ["c"]) == [0.2]  # failures are not cached


def by_content(body: dict) -> Reply:
    """A relative verdict that grades each shown candidate by its text ('good' 9, else 1), so the order the
    judge saw them in can be checked against the order they come back in."""
    shown = re.findall(r"\[([A-Z])\]\n(.*?)(?=\n\n\[|\Z)", body["messages"][1]["content"], re.DOTALL)
    return completion(json.dumps({"scores": {letter: 9 if "good" in text else 1 for letter, text in shown}}))


def test_relative_mode_shuffles_and_maps_scores_back(server):
    server.replies = [by_content]
    judge = server.judge(mode="relative")
    answers = ["bad one", "good one", "bad two", "good two", "bad three"]
    assert judge.score(RECORD, answers) == [0.1, 0.9, 0.1, 0.9, 0.1]
    body, _ = server.requests[0]
    shown = re.findall(r"\[[A-Z]\]\n(\w+ \w+)", body["messages"][1]["content"])
    assert sorted(shown) == sorted(answers) and shown != answers  # shuffled, every one shown once
    assert body["response_format"]["json_schema"]["schema"]["properties"]["scores"]["required"] == list("ABCDE")
    means = judge.stats.position_means()
    assert len(means) == 5 and sum(m or 0.0 for m in means) == pytest.approx(0.9 * 2 + 0.1 * 3)
    # The same prompt is shown in the same order again (a resumed round asks the same question).
    judge.score(RECORD, answers)
    assert server.requests[1][0]["messages"] == body["messages"]


def test_relative_mode_leaves_a_missing_candidate_unscored(server):
    server.replies = [completion('{"scores": {"A": 5, "B": 12}}')]
    judge = server.judge(mode="relative", seed=3)
    values = judge.score(RECORD, ["x", "y", "z"])
    assert sorted(v for v in values if v is not None) == [0.5]
    assert dict(judge.stats.failures) == {"malformed": 1, "missing": 1}
    server.replies = [completion('{"scores": [1, 2, 3]}')]
    assert server.judge(mode="relative").score(RECORD, ["x", "y"]) == [None, None]


def test_the_api_key_comes_from_the_environment_or_a_file_never_the_config(server, monkeypatch, tmp_path, caplog):
    server.replies = [(401, {}, b"bad key")]
    monkeypatch.setenv("JUDGE_KEY", KEY)
    with caplog.at_level(logging.DEBUG):
        assert server.judge(api_key_env="JUDGE_KEY").score(RECORD, ["a"]) == [None]
    assert server.requests[-1][1]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in caplog.text
    secret = tmp_path / "key"
    secret.write_text(KEY + "\n")
    server.judge(api_key_file=str(secret)).score(RECORD, ["a"])
    assert server.requests[-1][1]["Authorization"] == f"Bearer {KEY}"
    with pytest.raises(ConfigurationError, match="never goes in the config"):
        build_scorer("judge", {"base_url": server.url, "model": "j", "rubric": "r", "api_key": KEY})
    with pytest.raises(ConfigurationError, match="JUDGE_MISSING is not set"):
        server.judge(api_key_env="JUDGE_MISSING")
    with pytest.raises(ConfigurationError, match="rubric"):
        server.judge(rubric=" ")
    with pytest.raises(ConfigurationError, match="pointwise or relative"):
        server.judge(mode="pairwise")


def test_a_judge_runs_beside_sandboxed_verifiers(server, tmp_path):
    # The verifier runs in the confined worker (no sockets there); the judge in the round's process.
    server.replies = [completion('{"score": 6}')]
    judge = {"base_url": server.url, "model": "judge", "rubric": "Polite.", "max_retries": 0}
    specs = [
        ScorerSpec(type="regex", params={"pattern": "password"}, weight=1.0),
        ScorerSpec(type="judge", params=judge, weight=1.0),
    ]
    scorers = TaskScorers({"support": specs}, specs[:1], cache_dir=tmp_path)
    try:
        values = scorers.for_task("support").score(RECORD, ["Reset your password here.", "No idea."])
        assert values == [pytest.approx(0.8), pytest.approx(0.3)]
        assert scorers.judges()["support"]["calls"] == {"ok": 2}
        assert (tmp_path / "judge-cache.sqlite").exists()
    finally:
        scorers.close()


def test_a_judge_sees_the_tools_offered_and_the_calls_and_results_and_caches_on_them(server, tmp_path):
    weather = Tool("get_weather", "The weather.", {"type": "object", "properties": {"city": {"type": "string"}}})
    turns = (
        Message("user", "Weather in Rome?"),
        Message("assistant", "", (ToolCall("c0", "get_weather", '{"city": "Rome"}'),)),
        Message("tool", '{"temperature_c": 20}', tool_call_id="c0"),
        Message("user", "And in Paris?"),
    )
    agent = PromptRecord("a", "agent", turns, tools=(weather,), tool_choice="required")
    server.replies = [completion('{"score": 9}')]
    judge = server.judge(cache_dir=str(tmp_path))
    assert judge.score(agent, ["<tool_call>x</tool_call>"]) == [0.9]
    shown = server.requests[-1][0]["messages"][1]["content"]
    assert 'tools offered: [{"description":"The weather.","name":"get_weather"' in shown
    assert "tool_choice: required" in shown
    assert 'assistant calls get_weather({"city": "Rome"}) [c0]' in shown
    assert 'tool (c0): {"temperature_c": 20}' in shown and shown.index("Rome") < shown.index("Paris")
    other_tools = PromptRecord("a", "agent", turns, tools=(Tool("get_time", "", {}),), tool_choice="required")
    assert judge.score(other_tools, ["<tool_call>x</tool_call>"]) == [0.9]
    assert len(server.requests) == 2  # the same turns with other tools are another verdict, not a cache hit

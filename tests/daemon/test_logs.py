import json
import logging
import re
import sys

from taoflow.daemon.logs import JsonFormatter, relay_line
from taoflow.daemon.round.launcher import RoundLauncher
from tests.services import poll_until


def test_json_records_carry_the_traceback():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("taoflow.x", logging.ERROR, __file__, 1, "failed: %s", ("it",), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "ERROR" and entry["message"] == "failed: it" and "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("Z")


def test_a_childs_lines_are_tagged_in_either_format():
    assert relay_line("2026 WARNING x: careful\n", tag="round 42", fmt="text") == "[round 42] 2026 WARNING x: careful"
    tagged = json.loads(relay_line('{"level": "WARNING", "message": "careful"}\n', tag="round 42", fmt="json"))
    assert tagged == {"level": "WARNING", "message": "careful", "process": "round 42"}
    wrapped = json.loads(relay_line("a library printed this\n", tag="round 42", fmt="json"))
    assert wrapped["message"] == "a library printed this" and wrapped["process"] == "round 42"


def test_the_launcher_relays_a_rounds_stdout_and_stderr_tagged(capfd):
    exits = []
    script = "import sys; print('to stdout'); print('x' * 70000); print('to stderr', file=sys.stderr)"
    launcher = RoundLauncher(
        [sys.executable, "-c", script],
        drain_s=5,
        on_exit=exits.append,
        relay=lambda line, tag: relay_line(line, tag=tag, fmt="text"),
    )
    assert launcher.start()
    poll_until(lambda: exits, deadline_s=10)
    launcher.stop()
    seen: list[str] = []

    def relayed() -> bool:
        seen.append(capfd.readouterr().err)
        return "to stderr" in "".join(seen)

    poll_until(relayed, deadline_s=5)
    lines = "".join(seen).splitlines()
    tagged = [line for line in lines if re.match(r"\[round \d+\] ", line)]
    assert any(line.endswith("] to stdout") for line in tagged) and any(line.endswith("] to stderr") for line in tagged)
    pieces = [line for line in tagged if re.fullmatch(r"\[round \d+\] x+", line)]
    assert len(pieces) == 2 and max(len(line) for line in pieces) < 65600  # a long line arrives in bounded pieces
    assert "to stdout" not in lines and "to stderr" not in lines  # nothing reaches the daemon's stream untagged

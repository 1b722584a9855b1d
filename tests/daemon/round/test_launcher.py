"""The round's child process: its output relayed into the daemon's stream, tagged; its time bounded."""

import re
import sys
import time

from taoflow.daemon.logs import relay_line
from taoflow.daemon.round.launcher import RoundLauncher
from tests.support.processes import poll_until


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


def test_a_round_past_its_time_is_stopped():
    exits = []
    launcher = RoundLauncher(
        [sys.executable, "-c", "import time; time.sleep(60)"], drain_s=5, on_exit=exits.append, timeout_s=0.5
    )
    started = time.monotonic()
    assert launcher.start()
    poll_until(lambda: exits, deadline_s=15)
    assert time.monotonic() - started < 10 and exits[0] != 0

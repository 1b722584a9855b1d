import json
import logging
import sys

from taoflow.daemon.logs import JsonFormatter, relay_line


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

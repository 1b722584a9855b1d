"""How taoflow's processes log: text or one JSON object per line, client libraries kept quiet, and a
round process's output relayed into the daemon's stream tagged with the round's process id."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from typing import Literal, TextIO

__all__ = ["JsonFormatter", "LogFormat", "configure", "relay_line"]

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Client libraries and their level unless -v: their connection chatter repeats what taoflow reports itself
#: (a Kafka outage is one taoflow line per attempt; the client logs dozens).
QUIET = {
    "kafka": logging.CRITICAL,
    "apscheduler": logging.WARNING,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "botocore": logging.WARNING,
    "boto3": logging.WARNING,
    "urllib3": logging.WARNING,
    "uvicorn": logging.WARNING,
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted (a harness that swaps it keeps working)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure(*, verbose: bool = False, fmt: LogFormat = "text") -> None:
    """Set up the root logger (the CLI calls this before anything else logs); calling it again replaces
    what it set before and leaves other handlers alone."""
    handler = _Stderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Stderr)] + [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name, level in QUIET.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else level)
    warnings.showwarning = _warning_at_debug


def _warning_at_debug(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A library's `warnings.warn` (a deprecated name, an advisory) as a debug record of `py.warnings`: shown with
    -v, never between a command's own output (taoflow's own problems are log records at their level)."""
    logging.getLogger("py.warnings").debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)


def relay_line(line: str, *, tag: str, fmt: LogFormat) -> str:
    """A line a child process wrote, as the daemon writes it on: text prefixed with `[tag]`; JSON with a
    `process` field (a line that is not JSON, such as a library's direct print, is wrapped as a message)."""
    line = line.rstrip("\n")
    if fmt == "text":
        return f"[{tag}] {line}"
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "level": "INFO",
            "logger": "output",
            "message": line,
        }
    entry["process"] = tag
    return json.dumps(entry, ensure_ascii=False)

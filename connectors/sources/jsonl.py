"""A local source: JSON-lines log files, or directories of them (plain or gzip)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.protocols import SourceItem
from taoflow.connectors.sources.formats import MAX_RECORD_BYTES

__all__ = ["JsonlSource"]

_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson")


class JsonlSource:
    """Reads every line of the given files; directories contribute their *.jsonl[.gz] files."""

    name = "jsonl"

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]

    def files(self) -> list[Path]:
        found: list[Path] = []
        for path in self.paths:
            if path.is_dir():
                found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES)))
            elif path.is_file():
                found.append(path)
            else:
                raise ConfigurationError(f"source path {path} does not exist; fix source.paths")
        return found

    def read(self) -> Iterator[SourceItem]:
        for path in self.files():
            yield from _read_file(path)


class _Lines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


#: A line longer than this is not read whole: its first bytes go to the dead letter, the rest is skipped.
MAX_LINE_BYTES = MAX_RECORD_BYTES


def _read_file(path: Path) -> Iterator[SourceItem]:
    opener = gzip.open if path.name.endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, line in enumerate(_lines(fh), start=1):
                if isinstance(line, int):
                    yield SourceItem(payload=b"", origin=f"{path}:{lineno}", error=f"too_large: a line of {line} bytes")
                elif line.strip():
                    yield SourceItem(payload=line.rstrip(b"\r\n"), origin=f"{path}:{lineno}")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        yield SourceItem(payload=b"", origin=f"{path}:{lineno + 1}", error=f"truncated_gzip: {exc}")
    except OSError as exc:
        yield SourceItem(payload=b"", origin=str(path), error=f"unreadable: {exc}")


def _lines(fh: _Lines) -> Iterator[bytes | int]:
    """Each line, or the length of a line too long to hold (read and dropped MAX_LINE_BYTES at a time)."""
    while line := fh.readline(MAX_LINE_BYTES + 1):
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        size = len(line)
        while (rest := fh.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            size += len(rest)
        yield size + len(rest)

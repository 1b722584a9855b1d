"""A local source: JSON-lines log files, or directories of them (plain or gzip)."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.protocols import SourceItem

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


def _read_file(path: Path) -> Iterator[SourceItem]:
    opener = gzip.open if path.name.endswith(".gz") else open
    lineno = 0
    try:
        with opener(path, "rb") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    yield SourceItem(payload=line.rstrip(b"\r\n"), origin=f"{path}:{lineno}")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        yield SourceItem(payload=b"", origin=f"{path}:{lineno + 1}", error=f"truncated_gzip: {exc}")
    except OSError as exc:
        yield SourceItem(payload=b"", origin=str(path), error=f"unreadable: {exc}")

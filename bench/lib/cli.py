"""What every benchmark's command line shares: `--smoke`, the smallest run that still goes through every path of
the benchmark (CI runs each benchmark so: tests/test_bench.py); its figures mean nothing at that size."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["parse", "parser"]


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser whose help is the benchmark's docstring."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None, *, smoke: dict[str, Any]) -> argparse.Namespace:
    """The arguments; with --smoke, `smoke`'s values replace the defaults (a flag given beside it still wins)."""
    p.add_argument("--smoke", action="store_true", help="the smallest run that goes through every path (CI runs it)")
    first, _ = p.parse_known_args(argv)
    if first.smoke:
        p.set_defaults(**smoke)
    return p.parse_args(argv)

"""Writing a file so that a reader (or a crash) sees the old contents or the new, never half of them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["write_atomic"]


def write_atomic(path: Path, data: str | bytes, *, private: bool = True) -> None:
    """Write `data` beside `path`, flush it to disk, then rename it over `path` (its folder made if missing).
    `private`: readable by this user only (0600: what taoflow writes holds prompts, answers, scores); otherwise
    by anyone who can reach the folder (0644: an adapter's manifest, which serving replicas may read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        staging.unlink()  # a crash's leftover: a fresh file gets the mode asked for
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(staging, path)

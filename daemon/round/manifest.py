"""What an adapter was made from, stored beside its weights: enough to audit or reproduce it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from taoflow.connectors.records import PromptRecord
from taoflow.daemon.settings import Settings
from taoflow.daemon.store.summaries import BaseModelRef, RoundSummary

__all__ = ["MANIFEST_FILE", "manifest"]

#: The manifest's name in an adapter's directory.
MANIFEST_FILE = "taoflow-manifest.json"


def manifest(
    *,
    version: str,
    base: BaseModelRef,
    parent: str | None,
    prompts: Sequence[PromptRecord],
    settings: Settings,
    summary: RoundSummary,
) -> dict[str, Any]:
    prompt_hashes = sorted(p.prompt_hash for p in prompts)
    data_hash = hashlib.sha256("\n".join(prompt_hashes).encode()).hexdigest()
    return {
        "version": version,
        "base_model": {"reference": base.reference, "digest": base.digest},
        "parent": parent,
        "data": {"prompts": len(prompts), "prompt_set_sha256": data_hash},
        "config": {
            "generate": settings.generate.model_dump(mode="json"),
            "score": settings.score.model_dump(mode="json"),
            "train": settings.train.model_dump(mode="json"),
        },
        "timings_seconds": summary.seconds(),
        "scores": {
            task: t.model_dump(mode="json") for task, t in (summary.score.tasks if summary.score else {}).items()
        },
        "training": summary.train.model_dump(mode="json", exclude={"seconds"}) if summary.train else {},
    }

"""The configuration reference: every setting with its default and meaning, as README.md shows it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from taoflow.daemon.settings.base import Section
from taoflow.daemon.settings.root import Settings

__all__ = ["reference_table"]


def reference_table() -> str:
    """The configuration reference as a Markdown table (README.md embeds it; a test keeps them equal)."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]

    def walk(model: BaseModel, prefix: str) -> None:
        for name, field in type(model).model_fields.items():
            value = getattr(model, name)
            if isinstance(value, Section):
                walk(value, f"{prefix}{name}.")
            else:
                meaning = " ".join((field.description or "").split())  # one table row, however the docstring wraps
                rows.append(f"| `{prefix}{name}` | `{_show(value)}` | {meaning} |")

    walk(Settings.model_construct(), "")  # defaults only: the environment must not leak in
    return "\n".join(rows)


def _show(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        items = (", ".join(f"{k}: {v}" for k, v in i.model_dump(exclude_defaults=True).items()) for i in value)
        return "[" + ", ".join("{" + item + "}" for item in items) + "]"
    if isinstance(value, list | dict) and not value:
        return "[]" if isinstance(value, list) else "{}"
    return str(value)

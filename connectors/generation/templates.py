"""Chat templates: the one `model.chat_template` names, and whether a template shows the model its tools."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError
from taoflow.connectors.records import Chat, Message, Tool

__all__ = ["BUILTIN_TEMPLATES", "chat_template_text", "renders_tools"]

BUILTIN_TEMPLATES = ("chatml-tools",)


def chat_template_text(setting: str | None) -> str | None:
    """The chat template that `model.chat_template` names: a built-in (`chatml-tools`), a file, or None (the
    model's own)."""
    if setting is None:
        return None
    if setting in BUILTIN_TEMPLATES:
        return resources.files("taoflow.connectors.generation").joinpath(f"chat_templates/{setting}.jinja").read_text()
    path = Path(setting).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"model.chat_template {setting!r} is neither a built-in template ({', '.join(BUILTIN_TEMPLATES)}) nor a "
            "file; name a Jinja chat template file"
        )
    return path.read_text()


_PROBE = Chat(
    (Message("user", "?"),),
    (Tool("taoflow_probe_tool", "", {"type": "object", "properties": {"taoflow_probe_argument": {"type": "string"}}}),),
)


def renders_tools(tokenizer: Any, chat_template: str | None = None) -> bool:
    """Whether the template shows the model the tools a request offers (many templates drop them silently)."""
    try:
        text = tokenizer.apply_chat_template(
            _PROBE.template_messages(),
            tools=_PROBE.template_tools(),
            chat_template=chat_template,
            tokenize=False,
            add_generation_prompt=True,
        )
    except Exception:  # a template that raises on tools (some check and refuse them) does not render them
        return False
    return "taoflow_probe_argument" in str(text)

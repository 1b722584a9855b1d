"""Commands that talk to a running daemon through its admin API: status, pause, resume, trigger."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

from taoflow.daemon.cli import report
from taoflow.daemon.cli.commands import load
from taoflow.daemon.settings import admin_token

__all__ = ["cmd_pause", "cmd_resume", "cmd_status", "cmd_trigger"]


class Refused(Exception):
    """The daemon answered with an error status; the message is its detail."""


def call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One admin API call with the token from the settings; its JSON answer."""
    settings = load(args)
    d = settings.daemon
    base = (d.admin_url or f"http://{d.admin_host}:{d.admin_port}").rstrip("/")
    request = urllib.request.Request(
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {admin_token(settings)}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read(1 << 24))
    except urllib.error.HTTPError as exc:
        raise Refused(f"{method} {path}: HTTP {exc.code}: {_detail(exc.read(1 << 16))}") from None
    except OSError as exc:
        raise ConnectionError(f"cannot reach the daemon at {base}: {exc}") from None


def _detail(raw: bytes) -> str:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else json.dumps(detail)


def answer(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """Call, then print the answer as a table (or JSON with -o json); exit 1 when refused, 2 when unreachable."""
    try:
        result = call(args, method, path, body)
    except Refused as exc:
        print(f"taoflow: {exc}", file=sys.stderr)
        return 1
    except ConnectionError as exc:
        print(f"taoflow: {exc}", file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(result, indent=2))
    elif path == "/v1/status":
        print(report.status_text(result))
    else:
        print(result.get("detail", result))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    return answer(args, "GET", "/v1/status")


def cmd_pause(args: argparse.Namespace) -> int:
    return answer(args, "POST", "/v1/pause", {"reason": args.reason})


def cmd_resume(args: argparse.Namespace) -> int:
    return answer(args, "POST", "/v1/resume")


def cmd_trigger(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason, "tasks": [t for t in (args.tasks or "").split(",") if t]}
    if args.max_prompts is not None:
        body["max_prompts"] = args.max_prompts
    return answer(args, "POST", "/v1/trigger", body)

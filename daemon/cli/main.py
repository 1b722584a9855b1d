"""`taoflow`: the parser of every command, logging set-up, and one clear line for every error."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

from taoflow.connectors.errors import TaoflowError
from taoflow.daemon import logs
from taoflow.daemon.cli import commands, remote

__all__ = ["build_parser", "main"]

RUN_HELP = """\
The admin API (status, pause, resume, trigger, promote, rollback, /metrics) listens on
daemon.admin_host:daemon.admin_port (default 127.0.0.1:8470) and needs a bearer token of at least
16 characters: TAOFLOW_DAEMON__ADMIN_TOKEN, or daemon.admin_token.file (a mounted secret).
/healthz and /readyz need none.

SIGTERM or SIGINT drains: the source stops fetching and commits what it stored, the scheduler
stops, and a running round is asked to stop at its next checkpoint (killed after
daemon.drain_seconds); the next start resumes it. Exit status 0 after a drain, 1 when a task
failed more than daemon.max_restarts times, 2 for bad settings."""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _version() -> str:
    try:
        return version("taoflow")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, help="YAML settings file (default: ./taoflow.yaml when it exists, else the defaults)"
    )
    common.add_argument("--state-dir", type=Path, help="override storage.state_dir")
    # SUPPRESS: given after the command, it must not reset what was given before it.
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug messages")
    common.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=argparse.SUPPRESS,
        help="log lines as text (default) or as one JSON object per line",
    )
    return common


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", choices=["table", "json"], default="table", help="print a table (default) or JSON"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taoflow", description="Test-time Adaptive Optimization flywheel.")
    parser.add_argument("--version", action="version", version=f"taoflow {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--log-format", choices=["text", "json"], default="text", help="log lines as text or JSON")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    common = _common()

    def add(name: str, func: Callable[[argparse.Namespace], int], text: str, **kwargs: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=[common], **kwargs)
        p.set_defaults(func=func)
        return p

    ing = add("ingest", commands.cmd_ingest, "read the configured source into the prompt buffer")
    ing.add_argument(
        "--follow", action="store_true", help="keep consuming (kafka) or polling for new objects (s3) until stopped"
    )
    r = add("round", commands.cmd_round, "run (or resume) one TAO round from the buffer, gate it and promote it")
    r.add_argument("--no-promote", action="store_true", help="gate, but leave promotion to a person or the fleet")
    r.add_argument("--tasks", help="comma-separated tasks to train on (default: every task)")
    r.add_argument("--max-prompts", type=_positive, help="at most this many prompts (default: generate.max_prompts)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    r.add_argument("--owner-pid", type=int, help=argparse.SUPPRESS)  # the daemon that started this round
    add(
        "run",
        commands.cmd_run,
        "run the flywheel daemon: sources, retrain scheduler, fleet, admin API (until SIGTERM)",
        epilog=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _output(add("status", remote.cmd_status, "ask the running daemon for its status"))
    pa = add("pause", remote.cmd_pause, "stop the running daemon from starting rounds automatically")
    pa.add_argument("--reason", default="paused from the command line", help="recorded and shown in the status")
    _output(pa)
    _output(add("resume", remote.cmd_resume, "let the daemon start rounds again (clears the gate-rejection back-off)"))
    tr = add("trigger", remote.cmd_trigger, "ask the daemon to start a round now (even while paused)")
    tr.add_argument("--reason", default="triggered from the command line", help="recorded in the daemon's log")
    tr.add_argument("--tasks", help="comma-separated tasks to train on (default: every task with new prompts)")
    tr.add_argument("--max-prompts", type=_positive, help="at most this many prompts (default: generate.max_prompts)")
    _output(tr)
    dm = add("demo", commands.cmd_demo, "ingest the shipped sample logs and run a full round on SmolLM2-135M (CPU)")
    dm.add_argument(
        "--max-prompts", type=_positive, help="a quicker demo: at most this many training prompts (default: 160)"
    )
    dm.add_argument(
        "--task",
        choices=["default", "tool_use"],
        default="default",
        help="default: arithmetic and JSON extraction; tool_use: an agent's sessions, valid tool calls before/after",
    )
    a = add("adapters", commands.cmd_adapters, "list adapter versions or show one")
    a.add_argument("action", choices=["list", "show"], help="list every version, or show one with its history")
    a.add_argument("version", nargs="?", default="champion", help="with show: a version, 'champion' or 'previous'")
    _output(a)
    rb = add("rollback", commands.cmd_rollback, "make the previous (or --to) adapter the champion again (fleet too)")
    rb.add_argument("--task", help="the served model (task) name to roll back (default: model.served_name)")
    rb.add_argument("--to", help="version to reinstate (default: the 'previous' alias)")
    rb.add_argument("--reason", default="manual rollback", help="recorded with the change")
    fl = add("fleet", commands.cmd_fleet, "show each replica's adapters, drift from the champion, recent deploys")
    fl.add_argument("action", choices=["status"], help="what to show")
    sc = add(
        "scorers",
        commands.cmd_scorers,
        "check the configured scorers before they drive training: agreement with a golden set or a verifier, "
        "length bias, a relative judge's position bias",
    )
    sc.add_argument("action", choices=["check"], help="what to do")
    sc.add_argument("--round", type=_positive, help="the round whose candidates to score (default: the latest)")
    sc.add_argument(
        "--golden",
        type=Path,
        help="JSONL of prompts with rated candidates instead: {messages, task, candidates: [{text, label}]}",
    )
    sc.add_argument("--sample", type=_positive, default=64, help="at most this many prompts (default 64)")
    _output(sc)
    add(
        "gateway",
        commands.cmd_gateway,
        "serve the OpenAI-compatible gateway in front of the fleet: routes the stable name to versions, captures "
        "traffic into the flywheel (until SIGTERM)",
    )
    add("settings", commands.cmd_settings, "print the settings reference, or with --config the effective settings")
    b = add("buffer", commands.cmd_buffer, "show buffered prompts per task and recent dead letters")
    b.add_argument("--dead-letters", type=int, default=5, help="how many recent dead letters to show")
    b.add_argument(
        "--erased", action="store_true", help="show erasures instead: prompts erased after a round trained on them"
    )
    _output(b)
    fg = add(
        "forget",
        commands.cmd_forget,
        "erase prompts at a data subject's request: by request id or by text they contain (every copy: buffer, "
        "held-out set, dead letters; those a round trained on are listed with its adapter)",
    )
    fg.add_argument("--request-id", action="append", default=[], help="a request id to erase (repeatable)")
    fg.add_argument(
        "--match-file",
        type=Path,
        help="a file of texts, one per line: every prompt whose messages contain one is erased (a file, so that "
        "the texts stay out of shell history and process lists)",
    )
    fg.add_argument("--reason", required=True, help="recorded with each erasure, e.g. the request's ticket")
    fg.add_argument("--dry-run", action="store_true", help="say what would be erased; change nothing")
    fg.add_argument("--limit", type=_positive, default=1000, help="refuse when the texts match more prompts")
    fg.add_argument(
        "--max-share",
        type=float,
        default=0.25,
        help="refuse a text matching more than this share of a task's prompts (beyond 5 of them)",
    )
    _output(fg)
    return parser


def run() -> NoReturn:
    """The `taoflow` executable: `main()`, then exit with its code."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """Exit with `code`. A process that loaded deltalake leaves without the interpreter's finalisation (output
    flushed, then `os._exit`): deltalake's runtime threads (1.6.6) abort it there — "terminate called without an
    active exception", or a crash — after all its work is done, which would turn a success into a failure."""
    if "deltalake" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "adapters" and args.action == "list" and args.version != "champion":
        parser.error("adapters list takes no version (did you mean `adapters show VERSION`?)")
    logs.configure(verbose=args.verbose, fmt=args.log_format)
    try:
        return int(args.func(args))
    except TaoflowError as exc:
        print(f"taoflow: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `taoflow settings | head`: the reader left; nothing more to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0

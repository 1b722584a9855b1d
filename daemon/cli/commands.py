"""The `taoflow` command line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError, NothingToTrain, TaoflowError
from taoflow.daemon.settings import Settings, load_settings

__all__ = ["main"]

log = logging.getLogger("taoflow")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "state_dir", None):
        overrides["storage"] = {"state_dir": args.state_dir}
    if getattr(args, "task", None):
        overrides["model"] = {"served_name": args.task}
    return load_settings(args.config, **overrides)


def cmd_ingest(args: argparse.Namespace) -> int:
    from taoflow.daemon.ingest import sources
    from taoflow.daemon.store.state import open_state

    settings = _settings(args)
    stop = _stop_on_signals() if args.follow else threading.Event()  # before anything slow: SIGTERM drains
    state = open_state(settings)
    kind = settings.source.kind
    if kind == "jsonl":
        source = sources.build_source(settings)
        report = sources.build_ingestor(settings, state, source.name).run(source.read())
    elif kind == "s3":
        report = sources.ingest_s3(settings, state, stop=stop, follow=args.follow)
    elif args.follow:
        report = sources.follow_kafka(settings, state, stop=stop)
    else:
        raise ConfigurationError("a kafka source is consumed continuously: run `taoflow ingest --follow`")
    print(
        f"read {report.read}, added {report.added}, duplicates {report.duplicates}, "
        f"skipped {sum(report.skipped.values())}, dead-lettered {sum(report.dead_lettered.values())}"
    )
    return 0


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


class Interrupted(BaseException):
    """SIGTERM or SIGINT during a round: leave it at its last completed step (a BaseException,
    so the round does not record it as a failure); the next run resumes it."""


def cmd_round(args: argparse.Namespace) -> int:
    from taoflow.daemon.cli import report
    from taoflow.daemon.lifetime import exit_with
    from taoflow.daemon.round.launcher import NOTHING_TO_TRAIN
    from taoflow.daemon.round.recipe import no_progress
    from taoflow.daemon.store.lease import Lease
    from taoflow.daemon.store.state import open_state
    from taoflow.daemon.wiring import build_round

    if args.owner_pid:
        exit_with(args.owner_pid)  # started by the daemon: never outlive it

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, interrupt)
    settings = _settings(args)
    state = open_state(settings)
    lease = Lease(state.db, "round", stale_after_s=settings.daemon.lock_stale_seconds)
    holder = lease.acquire()
    if holder is not None:
        print(f"taoflow: another round is running ({holder.owner}); try again when it ends", file=sys.stderr)
        return 4
    lease.keep_renewed()
    try:
        tao_round = build_round(
            settings,
            state,
            progress=no_progress if args.no_progress else report.tqdm_progress,
            auto_promote=not args.no_promote,
            tasks=[t for t in (args.tasks or "").split(",") if t],
            max_prompts=args.max_prompts,
        )
        record = tao_round.run()
    except Interrupted as exc:
        log.warning("round interrupted by %s: it resumes at its next step on the next run", exc)
        return 130
    except NothingToTrain as exc:
        print(f"taoflow: {exc}", file=sys.stderr)
        return NOTHING_TO_TRAIN
    finally:
        lease.release()
    print(report.round_table(record))
    return 0 if record.summary.get("gate", {}).get("passed") else 3


def cmd_run(args: argparse.Namespace) -> int:
    from taoflow.daemon.service.running import Service

    return Service(_settings(args), config_path=args.config).run()


def _admin_call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """Talk to a running daemon's admin API; print its JSON answer."""
    import urllib.error
    import urllib.request

    from taoflow.daemon.service.running import admin_token

    settings = _settings(args)
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
            print(json.dumps(json.loads(response.read()), indent=2))
            return 0
    except urllib.error.HTTPError as exc:
        print(f"taoflow: {method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"taoflow: cannot reach the daemon at {base}: {exc}", file=sys.stderr)
        return 2


def cmd_status(args: argparse.Namespace) -> int:
    return _admin_call(args, "GET", "/v1/status")


def cmd_pause(args: argparse.Namespace) -> int:
    return _admin_call(args, "POST", "/v1/pause", {"reason": args.reason})


def cmd_resume(args: argparse.Namespace) -> int:
    return _admin_call(args, "POST", "/v1/resume")


def cmd_trigger(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason, "tasks": [t for t in (args.tasks or "").split(",") if t]}
    if args.max_prompts is not None:
        body["max_prompts"] = args.max_prompts
    return _admin_call(args, "POST", "/v1/trigger", body)


def cmd_demo(args: argparse.Namespace) -> int:
    from taoflow.daemon.cli.demo import run_demo

    return run_demo(state_dir=args.state_dir, config=args.config)


def cmd_adapters(args: argparse.Namespace) -> int:
    from taoflow.daemon.cli import report
    from taoflow.daemon.store.state import open_state

    settings = _settings(args)
    registry = open_state(settings).registry
    if args.action == "list":
        print(report.adapters_table(registry.versions(), registry, settings.model.served_name))
    else:
        version = registry.get(args.version, model=settings.model.served_name)
        print(json.dumps(report.adapter_details(version, registry.events(version.version)), indent=2))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """With a fleet: the same recorded deploy the daemon runs (under the fleet lease); without: the registry."""
    from taoflow.daemon.store.state import open_state

    settings = _settings(args)
    state = open_state(settings)
    model = settings.model.served_name
    before = state.registry.alias(model, "champion")
    if not settings.fleet.configured:
        after = state.registry.rollback(model, to=args.to, reason=args.reason)
        print(f"{model}: champion {before or '(none)'} -> {after.version}")
        return 0
    from taoflow.daemon.fleet.deploy import Deployer
    from taoflow.daemon.fleet.loop import fleet_lease
    from taoflow.daemon.fleet.replicas import Fleet
    from taoflow.daemon.round.parts import build_scorers

    lease = fleet_lease(settings, state)
    holder = lease.acquire()
    if holder is not None:
        print(f"taoflow: the fleet is busy ({holder.owner} holds it); try again, or use the admin API", file=sys.stderr)
        return 4
    lease.keep_renewed()
    try:
        deployer = Deployer(settings, state, Fleet(settings.fleet, state.store), scorers=build_scorers(settings))
        record = deployer.rollback(to=args.to, trigger="manual", reason=args.reason)
    finally:
        lease.release()
    print(
        f"{model}: deploy {record.id} {record.status}: champion {before or '(none)'} -> "
        f"{state.registry.alias(model, 'champion')}" + (f" ({record.reason})" if record.status != "done" else "")
    )
    return 0 if record.status == "done" else 3


def cmd_fleet(args: argparse.Namespace) -> int:
    from taoflow.daemon.cli import report
    from taoflow.daemon.fleet.reconcile import Reconciler
    from taoflow.daemon.fleet.replicas import Fleet
    from taoflow.daemon.store.deploys import DeployStore
    from taoflow.daemon.store.state import open_state

    settings = _settings(args)
    if not settings.fleet.configured:
        raise ConfigurationError("no fleet configured: set fleet.replicas or fleet.dns_name")
    state = open_state(settings)
    model = settings.model.served_name
    fleet = Fleet(settings.fleet, state.store)
    status = Reconciler(state, fleet, model).observe()
    print(report.fleet_table(status, DeployStore(state.db).latest(model, limit=5), model))
    return 0 if not any(status.drift.values()) else 3


def cmd_buffer(args: argparse.Namespace) -> int:
    from taoflow.daemon.cli import report
    from taoflow.daemon.store.state import open_state

    state = open_state(_settings(args))
    print(report.buffer_table(state.buffer.stats()))
    for dead in state.buffer.dead_letters(limit=args.dead_letters):
        print(f"  dead letter #{dead.id} {dead.origin}: {dead.reason} {dead.detail[:100]}")
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from taoflow.daemon.settings import reference_table

    if args.config is None:
        print(reference_table())
    else:
        print(json.dumps(_settings(args).model_dump(mode="json"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taoflow", description="Test-time Adaptive Optimization flywheel.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help_text: str, *, config_required: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", type=Path, required=config_required, help="YAML settings file")
        p.add_argument("--state-dir", type=Path, help="override storage.state_dir")
        p.set_defaults(func=func)
        return p

    ing = add("ingest", cmd_ingest, "read the configured source into the prompt buffer")
    ing.add_argument(
        "--follow", action="store_true", help="keep consuming (kafka) or polling for new objects (s3) until stopped"
    )
    r = add("round", cmd_round, "run (or resume) one TAO round from the buffer, gate it and promote it")
    r.add_argument("--no-promote", action="store_true", help="gate, but leave promotion to a person")
    r.add_argument("--tasks", help="comma-separated tasks to train on (default: all)")
    r.add_argument("--max-prompts", type=int, help="at most this many prompts (default: generate.max_prompts)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    r.add_argument("--owner-pid", type=int, help=argparse.SUPPRESS)  # the daemon that started this round
    add("run", cmd_run, "run the flywheel daemon: sources, retrain scheduler, admin API (until SIGTERM)")
    add("status", cmd_status, "ask the running daemon for its status")
    pa = add("pause", cmd_pause, "stop the running daemon from starting rounds automatically")
    pa.add_argument("--reason", default="paused from the command line")
    add("resume", cmd_resume, "let the daemon start rounds again (clears the gate-rejection back-off)")
    tr = add("trigger", cmd_trigger, "ask the daemon to start a round now")
    tr.add_argument("--reason", default="triggered from the command line")
    tr.add_argument("--tasks", help="comma-separated tasks (default: all)")
    tr.add_argument("--max-prompts", type=int)
    add("demo", cmd_demo, "ingest the shipped sample logs and run a full round on SmolLM2-135M (CPU)")
    a = add("adapters", cmd_adapters, "list adapter versions or show one")
    a.add_argument("action", choices=["list", "show"])
    a.add_argument("version", nargs="?", default="champion", help="version, 'champion' or 'previous'")
    rb = add("rollback", cmd_rollback, "make the previous (or --to) adapter the champion again (on the fleet too)")
    rb.add_argument("--task", help="the served model (task) name to roll back (default: model.served_name)")
    rb.add_argument("--to", help="version to reinstate (default: the 'previous' alias)")
    rb.add_argument("--reason", default="manual rollback", help="recorded with the change")
    fl = add("fleet", cmd_fleet, "show each serving replica's adapters, drift from the champion and recent deploys")
    fl.add_argument("action", choices=["status"])
    add("settings", cmd_settings, "print the settings reference, or with --config the effective settings")
    b = add("buffer", cmd_buffer, "show buffered prompts per task and recent dead letters")
    b.add_argument("--dead-letters", type=int, default=5, help="how many recent dead letters to show")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args))
    except TaoflowError as exc:
        print(f"taoflow: error: {exc}", file=sys.stderr)
        return 2

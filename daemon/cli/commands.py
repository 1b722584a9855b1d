"""The `taoflow` commands that work on the state directly: ingest, round, run, demo, adapters, rollback,
fleet status, buffer, settings. (status, pause, resume and trigger ask the daemon: see remote.py.)"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taoflow.connectors.errors import ConfigurationError, NothingToTrain
from taoflow.daemon.settings import Settings, load_settings

if TYPE_CHECKING:
    from taoflow.daemon.store.state import State

__all__ = [
    "DEFAULT_CONFIG",
    "cmd_adapters",
    "cmd_buffer",
    "cmd_demo",
    "cmd_fleet",
    "cmd_ingest",
    "cmd_rollback",
    "cmd_round",
    "cmd_run",
    "cmd_settings",
    "load",
]

log = logging.getLogger("taoflow")

#: Read when no --config is given and it exists in the working directory.
DEFAULT_CONFIG = Path("taoflow.yaml")


def config_path(args: argparse.Namespace) -> Path | None:
    """--config, else ./taoflow.yaml where there is one (said once, so nobody wonders which state opened)."""
    if args.config is not None:
        return Path(args.config)
    if DEFAULT_CONFIG.is_file():
        log.info("using %s (pass --config to choose another)", DEFAULT_CONFIG.resolve())
        return DEFAULT_CONFIG
    return None


def load(args: argparse.Namespace) -> Settings:
    """The settings of this command: the config file, then --state-dir and --task on top."""
    overrides: dict[str, Any] = {}
    if getattr(args, "state_dir", None):
        overrides["storage"] = {"state_dir": args.state_dir}
    if getattr(args, "task", None):
        overrides["model"] = {"served_name": args.task}
    return load_settings(config_path(args), **overrides)


def existing_state(args: argparse.Namespace) -> tuple[Settings, State]:
    from taoflow.daemon.store.state import open_existing_state

    settings = load(args)
    return settings, open_existing_state(settings)


def cmd_ingest(args: argparse.Namespace) -> int:
    from taoflow.daemon.ingest import configured as sources
    from taoflow.daemon.store.state import open_state

    settings = load(args)
    kind = settings.source.kind
    if kind == "kafka" and not args.follow:
        raise ConfigurationError("a kafka source is consumed continuously: run `taoflow ingest --follow`")
    if kind == "jsonl" and args.follow:
        log.warning("--follow is ignored for a jsonl source: its files are read once")
    jsonl = sources.build_source(settings) if kind == "jsonl" else None  # a bad source fails before any state exists
    stop = _stop_on_signals() if args.follow else threading.Event()  # before anything slow: SIGTERM drains
    state = open_state(settings)
    if jsonl is not None:
        report = sources.build_ingestor(settings, state, jsonl.name).run(jsonl.read())
    elif kind == "s3":
        report = sources.ingest_s3(settings, state, stop=stop, follow=args.follow)
    elif kind == "delta":
        report = sources.ingest_delta_table(settings, state, stop=stop, follow=args.follow)
    else:
        report = sources.follow_kafka(settings, state, stop=stop)
    print(
        f"read {report.read}, added {report.added}, duplicates {report.duplicates}, evicted {report.evicted}, "
        f"skipped {sum(report.skipped.values())}, dead-lettered {sum(report.dead_lettered.values())}"
        + (
            f", relabelled {report.relabelled} (unknown tasks, as {settings.ingest.default_task})"
            if report.relabelled
            else ""
        )
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
    from taoflow.connectors.lifetime import exit_with
    from taoflow.daemon.cli import report
    from taoflow.daemon.round.launcher import NOTHING_TO_TRAIN, SKIPPED
    from taoflow.daemon.round.stages import no_progress
    from taoflow.daemon.store.lease import Lease
    from taoflow.daemon.store.state import open_state
    from taoflow.daemon.wiring import build_round

    if args.owner_pid:
        exit_with(args.owner_pid)  # started by the daemon: never outlive it

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, interrupt)
    settings = load(args)
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
    if record.status == "skipped":
        return SKIPPED
    return 0 if record.summary.gate is not None and record.summary.gate.passed else 3


def cmd_run(args: argparse.Namespace) -> int:
    from taoflow.daemon.service.running import Service

    return Service(load(args), config_path=config_path(args), log_format=args.log_format).run()


def cmd_gateway(args: argparse.Namespace) -> int:
    from taoflow.daemon.gateway.app import serve

    return serve(load(args))


def cmd_demo(args: argparse.Namespace) -> int:
    from taoflow.daemon.cli.demo import run_demo

    return run_demo(state_dir=args.state_dir, config=args.config, max_prompts=args.max_prompts, task=args.task)


def cmd_adapters(args: argparse.Namespace) -> int:
    from taoflow.daemon.cli import report

    settings, state = existing_state(args)
    registry = state.registry
    if args.action == "list":
        if args.output == "json":
            print(json.dumps([report.adapter_details(v, []) for v in registry.versions()], indent=2))
            return 0
        print(report.adapters_table(registry.versions(), registry, settings.model.served_name))
    else:
        version = registry.get(args.version, model=settings.model.served_name)
        print(json.dumps(report.adapter_details(version, registry.events(version.version)), indent=2))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """With a fleet: the same recorded deploy the daemon runs (under the fleet lease); without: the registry."""
    settings, state = existing_state(args)
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

    settings, state = existing_state(args)
    if not settings.fleet.configured:
        raise ConfigurationError("no fleet configured: set fleet.replicas or fleet.dns_name")
    model = settings.model.served_name
    fleet = Fleet(settings.fleet, state.store)
    status = Reconciler(state, fleet, model).observe()
    print(report.fleet_table(status, DeployStore(state.db).latest(model, limit=5), model))
    return 0 if not any(status.drift.values()) else 3


def cmd_forget(args: argparse.Namespace) -> int:
    from taoflow.daemon.store.erasure import forget, report_counts

    _, state = existing_state(args)
    texts: list[str] = []
    if args.match_file is not None:
        texts = [line.strip() for line in args.match_file.read_text().splitlines() if line.strip()]
    if not args.request_id and not texts:
        raise ConfigurationError("name what to erase: --request-id ID (repeatable) or --match-file FILE")
    report = forget(
        state.db,
        rounds_dir=state.rounds_dir,
        request_ids=args.request_id,
        texts=texts,
        reason=args.reason,
        limit=args.limit,
        max_share=args.max_share,
        dry_run=args.dry_run,
    )
    counts = report_counts(report)
    if args.output == "json":
        print(json.dumps({"dry_run": args.dry_run, **counts}, indent=2))
    else:
        print(
            f"{'would erase' if args.dry_run else 'erased'}: {report.deleted} untrained prompts, {report.tombstoned} "
            f"that rounds trained on, {report.dead_letters} dead letters; {report.blocked} requests not held, kept "
            "out from now on"
        )
        if args.dry_run and report.sample:
            print("prompts it matches, for instance:")
            for line in report.sample:
                print(f"  {line}")
        if report.tombstoned and not args.dry_run:
            print("the adapters trained on them: `taoflow buffer --erased`; retrain or roll back")
    log.info("forget (%s): %s%s", args.reason, counts, " (dry run)" if args.dry_run else "")
    if report.unscrubbed:
        print(
            f"INCOMPLETE: {len(report.unscrubbed)} round directories cannot be found, and files there may still hold"
            f" the text: {', '.join(report.unscrubbed[:5])}",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_buffer(args: argparse.Namespace) -> int:
    from taoflow.daemon.cli import report

    _, state = existing_state(args)
    if args.erased:
        return _erased(args, state)
    stats, evicted, freshness = state.buffer.stats(), state.buffer.evictions(), state.buffer.freshness()
    if args.output == "json":
        tasks = {t: {"train": c.train, "heldout": c.heldout, "new": c.new} for t, c in stats.tasks.items()}
        gone = [{"task": t, "reason": r, "count": n} for (t, r), n in sorted(evicted.items())]
        print(json.dumps({"tasks": tasks, "dead_letters": stats.dead_letters, "evicted": gone}, indent=2))
        return 0
    print(report.buffer_table(stats, evicted, freshness))
    for dead in state.buffer.dead_letters(limit=args.dead_letters):
        print(f"  dead letter #{dead.id} {dead.origin}: {dead.reason} {dead.detail[:100]}")
    return 0


def _erased(args: argparse.Namespace, state: State) -> int:
    from taoflow.daemon.cli import report
    from taoflow.daemon.store.erasure import erased, erasure_counts, erasure_summary, trained_by_version

    if args.output == "json":
        print(json.dumps(erasure_summary(state.db, limit=200), indent=2))
    else:
        print(report.erased_table(erasure_counts(state.db), trained_by_version(state.db), erased(state.db, limit=200)))
    return 0


def cmd_scorers(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from taoflow.daemon.cli import report
    from taoflow.daemon.round import scorer_check
    from taoflow.daemon.round.parts import resolve_model

    settings = load(args)
    model = settings.model.served_name
    specs = [s for group in [*settings.score.tasks.values(), settings.score.default] for s in group]
    needs_state = args.golden is None or any(s.type == "self_certainty" for s in specs)
    state = existing_state(args)[1] if needs_state else None
    if args.golden is not None:
        checks = scorer_check.golden_set(args.golden, sample=args.sample)
    else:
        assert state is not None
        checks = scorer_check.round_set(state, model, round_id=args.round, sample=args.sample)
    policy = None
    if state is not None and any(s.type == "self_certainty" for s in specs):
        champion = state.registry.alias(model, "champion")
        policy = (resolve_model(settings).path, state.store.fetch(champion) if champion else None)
    reports = scorer_check.check_scorers(settings, checks, policy=policy)
    if args.output == "json":
        print(json.dumps({"source": checks.source, "scorers": [asdict(r) for r in reports]}, indent=2))
    else:
        print(report.scorer_check_table(checks.source, len(checks.records), reports))
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from taoflow.daemon.settings import reference_table

    if args.config is None:  # the reference; the effective settings only for a file named on purpose
        print(reference_table())
    else:
        print(json.dumps(load(args).model_dump(mode="json"), indent=2))
    return 0

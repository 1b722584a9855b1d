"""The `taoflow` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taoflow.connectors.errors import ConfigurationError, TaoflowError
from taoflow.daemon.settings import Settings, load_settings

__all__ = ["main"]

log = logging.getLogger("taoflow")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "state_dir", None):
        overrides["storage"] = {"state_dir": args.state_dir}
    return load_settings(args.config, **overrides)


def cmd_ingest(args: argparse.Namespace) -> int:
    from taoflow.daemon import wiring

    settings = _settings(args)
    stop = _stop_on_signals() if args.follow else threading.Event()  # before anything slow: SIGTERM drains
    state = wiring.open_state(settings)
    kind = settings.source.kind
    if kind == "jsonl":
        source = wiring.build_source(settings)
        report = wiring.build_ingestor(settings, state, source.name).run(source.read())
    elif kind == "s3":
        report = _ingest_s3(settings, state, stop=stop, follow=args.follow)
    elif args.follow:
        report = _follow_kafka(settings, state, stop=stop)
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


def _ingest_s3(settings: Settings, state: Any, *, stop: threading.Event, follow: bool) -> Any:
    from taoflow.daemon import wiring
    from taoflow.daemon.streaming import ingest_objects

    source = wiring.build_object_source(settings)
    s3 = settings.source.s3
    ingestor = wiring.build_ingestor(settings, state, source.name, field_map=s3.field_map)
    log.info("ingesting s3://%s/%s%s", s3.bucket, s3.prefix, " until stopped" if follow else "")
    return ingest_objects(
        source,
        ingestor,
        state.buffer,
        state.db,
        stop=stop,
        buffer_cap=settings.ingest.buffer_cap,
        follow=follow,
        poll_interval_s=s3.poll_interval_seconds,
        prefetch=s3.prefetch,
        parse_processes=len(os.sched_getaffinity(0)) if s3.parse_processes is None else s3.parse_processes,
    )


def _follow_kafka(settings: Settings, state: Any, *, stop: threading.Event) -> Any:
    """Consume until SIGTERM or SIGINT, committing offsets after every stored batch."""
    from taoflow.daemon import wiring
    from taoflow.daemon.streaming import run_stream

    source = wiring.build_stream_source(settings)
    kafka = settings.source.kafka
    ingestor = wiring.build_ingestor(settings, state, source.name, field_map=kafka.field_map)
    log.info("consuming %s until stopped", source.name)
    return run_stream(
        source,
        ingestor,
        state.buffer,
        stop=stop,
        buffer_cap=settings.ingest.buffer_cap,
        poll_timeout_s=kafka.poll_timeout_seconds,
    )


def cmd_round(args: argparse.Namespace) -> int:
    from taoflow.daemon import report, wiring
    from taoflow.daemon.round import TaoRound

    settings = _settings(args)
    state = wiring.open_state(settings)
    tao_round = TaoRound.from_settings(settings, state, progress=report.tqdm_progress, auto_promote=not args.no_promote)
    record = tao_round.run()
    print(report.round_table(record))
    return 0 if record.summary.get("gate", {}).get("passed") else 3


def cmd_demo(args: argparse.Namespace) -> int:
    from taoflow.daemon.demo import run_demo

    return run_demo(state_dir=args.state_dir, config=args.config)


def cmd_adapters(args: argparse.Namespace) -> int:
    from taoflow.daemon import report, wiring

    settings = _settings(args)
    registry = wiring.open_state(settings).registry
    if args.action == "list":
        print(report.adapters_table(registry.versions(), registry, settings.model.served_name))
    else:
        version = registry.get(args.version, model=settings.model.served_name)
        print(json.dumps(report.adapter_details(version, registry.events(version.version)), indent=2))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from taoflow.daemon import wiring

    settings = _settings(args)
    registry = wiring.open_state(settings).registry
    model = settings.model.served_name
    before = registry.alias(model, "champion")
    after = registry.rollback(model, to=args.to, reason=args.reason)
    print(f"{model}: champion {before or '(none)'} -> {after.version}")
    return 0


def cmd_buffer(args: argparse.Namespace) -> int:
    from taoflow.daemon import report, wiring

    state = wiring.open_state(_settings(args))
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
    add("demo", cmd_demo, "ingest the shipped sample logs and run a full round on SmolLM2-135M (CPU)")
    a = add("adapters", cmd_adapters, "list adapter versions or show one")
    a.add_argument("action", choices=["list", "show"])
    a.add_argument("version", nargs="?", default="champion", help="version, 'champion' or 'previous'")
    rb = add("rollback", cmd_rollback, "make the previous (or --to) adapter the champion again")
    rb.add_argument("--to", help="version to reinstate (default: the 'previous' alias)")
    rb.add_argument("--reason", default="manual rollback", help="recorded with the change")
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


if __name__ == "__main__":
    sys.exit(main())

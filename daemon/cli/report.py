"""What the CLI prints: tables of rounds, adapters and the buffer, and progress bars."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taoflow.connectors.protocols import Progress
from taoflow.daemon.store.buffer import BufferStats
from taoflow.daemon.store.erasure import ErasedPrompt
from taoflow.daemon.store.registry import AdapterEvent, AdapterVersion, Registry
from taoflow.daemon.store.rounds import RoundRecord
from taoflow.daemon.store.summaries import MonitorSummary, SliceSummary
from taoflow.policies.retrain import duration

if TYPE_CHECKING:
    from taoflow.daemon.fleet.reconcile import ReconcileReport
    from taoflow.daemon.round.agreement import ScorerReport
    from taoflow.daemon.store.deploys import DeployRecord

__all__ = [
    "adapter_details",
    "adapters_table",
    "buffer_table",
    "erased_table",
    "fleet_table",
    "gate_table",
    "round_table",
    "scorer_check_table",
    "status_text",
    "table",
    "tqdm_progress",
]


def tqdm_progress(description: str, total: int) -> Progress:
    """A progress bar on stderr that closes itself when it reaches `total`."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=f"{description:>16}", unit="it", leave=True, file=sys.stderr, dynamic_ncols=True)
    done = 0

    def advance(units: int) -> None:
        nonlocal done
        done += units
        bar.update(units)
        if done >= total:
            bar.close()

    return advance


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def round_table(record: RoundRecord) -> str:
    gate = record.summary.gate
    lines = [
        f"round {record.id}: {record.status} at step {record.step}" + (f" ({record.reason})" if record.reason else "")
    ]
    if record.version:
        lines.append(f"adapter: {record.version}")
    if gate is not None:
        lines += ["", gate_table(gate.slices, gate.against)]
        if gate.training_scorers:
            lines += ["", "the same answers by the training scorers:", gate_table(gate.training_scorers, gate.against)]
        noise = gate.noise
        if noise is not None:
            lines.append(
                f"improvement {noise.confidence:.0%} bounds [{noise.lower:+.3f}, {noise.upper:+.3f}], "
                f"{noise.improved} prompts up, {noise.worsened} down (sign test p={noise.p_value:.3f})"
            )
        if gate.monitors is not None:
            lines.append(monitor_line(gate.monitors))
        lines.append("")
        verdict = "PASSED" if gate.passed else "REJECTED"
        lines.append(f"gate {verdict}: {gate.reason}" + ("; promoted to champion" if gate.promoted else ""))
    score = record.summary.score
    if score is not None and score.advice:
        lines += ["", "what the round learnt from, and what would change it:", *(f"  {a}" for a in score.advice)]
    timings = record.summary.seconds()
    lines.append("step seconds: " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    return "\n".join(lines)


def monitor_line(m: MonitorSummary) -> str:
    """The scorer-gaming monitors' readings on one line, and what they blocked."""
    read = [f"{m.answers} answers"]
    if m.length_ratio is not None:
        read.append(f"length {m.length_ratio:.2f}x the champion's")
    if m.refusal_rate is not None and m.champion_refusal_rate is not None:
        read.append(f"refusals {m.refusal_rate:.0%} vs {m.champion_refusal_rate:.0%}")
    if m.scorer_divergence is not None:
        read.append(f"training minus gate scorers {m.scorer_divergence:+.3f}")
    if m.position_bias is not None:
        read.append(f"position bias {m.position_bias:+.3f}")
    verdict = "BLOCKED: " + "; ".join(m.blocked) if m.blocked else "none blocked"
    return f"monitors: {', '.join(read)} ({verdict})"


def gate_table(slices: Sequence[SliceSummary], against: str) -> str:
    rows = [
        [
            s.task,
            s.n,
            f"{s.champion_mean:.3f}",
            f"{s.candidate_mean:.3f}",
            f"{s.candidate_mean - s.champion_mean:+.3f}",
            "-" if s.changed is None else s.changed,
            s.left_out,
        ]
        for s in slices
    ]
    return table(["task", "held-out", f"before ({against})", "after", "change", "changed", "unscored"], rows)


def _calibrated(r: ScorerReport) -> str:
    c = r.calibration
    return "-" if c is None else f"{c.threshold:.2f} ({c.balanced_accuracy:.0%})"


def scorer_check_table(source: str, prompts: int, reports: Sequence[ScorerReport]) -> str:
    def num(value: float | None, fmt: str = "+.2f") -> str:
        return "-" if value is None else format(value, fmt)

    rows = [
        [
            r.task,
            r.scorer,
            f"{r.scored}/{r.scored + r.unscored}",
            num(r.mean, ".3f"),
            num(r.rank_correlation),
            "-" if r.pairwise_accuracy is None else f"{r.pairwise_accuracy:.0%} of {r.pairs}",
            num(r.length_correlation),
            " ".join(num(m, ".2f") for m in r.position_means) or "-",
            f"{r.flat_prompts}/{r.prompts}" + (" SATURATED" if r.saturated else ""),
            _calibrated(r),
        ]
        for r in reports
    ]
    headers = [
        "task", "scorer", "scored", "mean", "rank corr.", "pairs agreed", "length corr.", "by position", "all alike",
        "threshold",
    ]  # fmt: skip
    notes = (
        "rank corr. and pairs agreed: against the reference (golden labels, or the task's verifier); length corr.: "
        "score against answer length (a scorer that likes long answers shows it); by position: a relative judge's "
        "mean score for each position it was shown; all alike: prompts whose candidates it scored all the same "
        "(SATURATED: nearly all of them, so it gives a round almost nothing to learn from, whatever it agrees with; "
        "a relative judge over the group, a stricter rubric, or a verifier checked on golden labels would); "
        "threshold: the score at which it best tells the answers the reference calls good (0.5 or more) from the "
        "rest, and how often it then agrees (balanced accuracy) — set train.score_threshold from it before a "
        "judge drives training."
    )
    return f"{prompts} prompts from {source}\n\n" + table(headers, rows) + "\n\n" + notes


def adapters_table(versions: Sequence[AdapterVersion], registry: Registry, model: str) -> str:
    aliases = {registry.alias(model, a): a for a in ("champion", "previous")}
    rows = [
        [
            v.version,
            v.state,
            aliases.get(v.version, ""),
            v.parent or "-",
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(v.created_at)),
            v.reason[:60],
        ]
        for v in versions
    ]
    return (
        table(["version", "state", "alias", "parent", "created (UTC)", "reason"], rows) if rows else "no adapters yet"
    )


def adapter_details(version: AdapterVersion, events: Sequence[AdapterEvent]) -> dict[str, Any]:
    return {
        "version": version.version,
        "model": version.model,
        "state": version.state,
        "parent": version.parent,
        "base_model": version.base_model,
        "base_digest": version.base_digest,
        "uri": version.uri,
        "manifest": version.manifest,
        "history": [
            {
                "from": e.from_state,
                "to": e.to_state,
                "reason": e.reason,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.at)),
            }
            for e in events
        ],
    }


def buffer_table(
    stats: BufferStats,
    evicted: Mapping[tuple[str, str], int] | None = None,
    freshness: Mapping[str, tuple[float, float, float]] | None = None,
    *,
    now: float | None = None,
) -> str:
    """Per task: prompts by split, untrained ones, how many the cap let go, and how old the untrained ones are."""
    now = time.time() if now is None else now
    gone: dict[str, int] = {}
    for (task, _), count in (evicted or {}).items():
        gone[task] = gone.get(task, 0) + count
    ages = freshness or {}

    def age(task: str, which: int) -> str:
        return duration(now - ages[task][which]) if task in ages else "-"

    rows = [
        [task, c.train, c.heldout, c.new, gone.get(task, 0), age(task, 0), age(task, 2)]
        for task, c in stats.tasks.items()
    ]
    headers = ["task", "train", "held-out", "new", "evicted", "newest new", "oldest new"]
    body = table(headers, rows) if rows else "buffer is empty"
    return f"{body}\ndead letters: {stats.dead_letters}"


def erased_table(
    counts: Mapping[str, int], versions: Mapping[tuple[str, str], int], listed: Sequence[ErasedPrompt]
) -> str:
    """Erasures: how many, the adapters trained on erased prompts (a champion among them serves them), and the
    newest such prompts."""
    lines = [
        f"erased: {counts.get('untrained', 0)} before any round trained on them, "
        f"{counts.get('trained', 0)} after (tombstones)"
    ]
    if not versions:
        lines.append("no adapter was trained on an erased prompt")
        return "\n".join(lines)
    serving = sorted(v for (v, st), _ in versions.items() if st == "champion")
    if serving:
        lines.append(f"SERVING: {', '.join(serving)} (champion) was trained on erased prompts: retrain or roll back")
    lines.append(table(["adapter", "state", "erased prompts"], [[v, st, n] for (v, st), n in sorted(versions.items())]))
    lines.append(
        table(
            ["request id", "task", "round", "adapter", "erased at", "reason"],
            [
                [e.request_id or "-", e.task or "-", e.round_id, e.version or "-", _utc(e.erased_at), e.reason[:60]]
                for e in listed
            ],
        )
    )
    return "\n".join(lines)


def fleet_table(status: ReconcileReport, deploys: Sequence[DeployRecord], model: str) -> str:
    """Each replica's adapters against the champion, the drift, then the recent deploys."""
    rows = []
    for url, adapters in sorted(status.replicas.items()):
        if adapters is None:
            rows.append([url, "unreachable", "-", "-"])
            continue
        served = adapters.get(model)
        drifting = any(item.split(" ")[0] == url for items in status.drift.values() for item in items)
        state = "drift" if drifting else "ok"
        others = ", ".join(sorted(set(adapters) - {model})) or "-"
        rows.append([url, state, Path(served).name if served else "(none)", others])
    lines = [f"{model}: champion {status.champion or '(none)'}", table(["replica", "state", model, "other"], rows)]
    drift = [f"{kind}: {', '.join(items)}" for kind, items in status.drift.items() if items]
    lines.append("drift: " + ("; ".join(drift) if drift else "none"))
    if deploys:
        lines.append(
            table(
                ["deploy", "kind", "trigger", "version", "status", "step", "reason"],
                [[d.id, d.kind, d.trigger, d.version, d.status, d.step, d.reason[:60]] for d in deploys],
            )
        )
        lines += [shadow_line(d) for d in deploys if "shadow" in d.detail]
    return "\n".join(lines)


def shadow_line(deploy: DeployRecord) -> str:
    """A deploy's shadow: its pairs so far and its deadline, or the verdict with its figures."""
    shadow = deploy.detail["shadow"]
    head = f"shadow of deploy {deploy.id} ({deploy.version}): {shadow.get('pairs', 0)} pairs"
    verdict = shadow.get("verdict")
    if verdict is None:
        extended = ", extended once" if shadow.get("extended") else ""
        return f"{head}, gathering until {_utc(shadow.get('deadline'))}{extended}"
    decided = "PROMOTED" if verdict["passed"] else "REJECTED"
    means = f"candidate {verdict['candidate_mean']:.3f} vs champion {verdict['champion_mean']:.3f}"
    return f"{head}, {means}: {decided}: {verdict['reason']}"


def _utc(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def status_text(status: dict[str, Any]) -> str:
    """The daemon's `/v1/status` as an operator reads it."""
    paused = "no"
    if status["paused"]:
        who = status.get("paused_by") or "operator"
        paused = (
            "yes, by the config (retrain.paused)"
            if who == "config"
            else f"yes, by an operator: {status['pause_reason']}"
        )
    lock = status.get("round_lock")
    running = "no"
    if status["round_running"]:
        running = f"yes, held by {lock['owner']} since {_utc(lock['since'])}" if lock else "yes"
    decision = status["next_trigger"]
    next_round = f"{'now' if decision['trigger'] else 'not yet'} ({decision['rule']}): {decision['reason']}"
    lines = [
        f"model:          {status['model']}",
        f"champion:       {status['champion'] or '(none: the base model serves)'}",
        f"previous:       {status['previous'] or '-'}",
        f"paused:         {paused}",
        f"round running:  {running}",
        f"next round:     {next_round}",
        "tasks:          " + ", ".join(f"{n} {'up' if up else 'DOWN'}" for n, up in status["tasks"].items()),
    ]
    if decision.get("alert"):
        lines.append(f"ALERT:          {decision['alert']}")
    buffer = status["buffer"]
    rows = [[task, c["train"], c["heldout"], c["new"]] for task, c in buffer["tasks"].items()]
    lines += ["", table(["task", "train", "held-out", "new"], rows) if rows else "buffer is empty"]
    lines.append(f"dead letters: {buffer['dead_letters']}")
    if status["rounds"]:
        recent = [
            [r["id"], r["status"], r["step"], r["version"] or "-", _utc(r["started_at"]), (r["reason"] or "")[:70]]
            for r in status["rounds"]
        ]
        lines += ["", table(["round", "status", "step", "version", "started", "reason"], recent)]
    return "\n".join(lines)

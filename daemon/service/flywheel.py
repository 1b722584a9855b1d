"""The flywheel: ask the retrain policy on a schedule, start rounds as child processes, watch them.

APScheduler calls `Flywheel.evaluate` every `retrain.evaluate_interval_seconds` (and at the
cron times, when a cron is set). Each evaluation re-reads the config file if it changed
(policy changes apply without a restart; an invalid file is refused and the old settings
kept), resumes an unfinished round before anything else, and otherwise acts on
`decide_retrain`. A round runs as `taoflow round` in its own process: the daemon stays
small (no torch), a crash or OOM in training cannot take it down, and the round takes the
single-flight `round` lease itself, exactly as a round started by hand does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from taoflow.connectors.errors import TaoflowError
from taoflow.daemon.round.launcher import EXIT_OUTCOMES, RoundLauncher
from taoflow.daemon.round.parts import build_scorers
from taoflow.daemon.service.metrics import DaemonMetrics
from taoflow.daemon.settings import Settings, load_settings
from taoflow.daemon.store.controls import Controls
from taoflow.daemon.store.lease import Lease
from taoflow.daemon.store.rounds import RoundRecord, RoundStore
from taoflow.daemon.store.state import State
from taoflow.policies.retrain import RetrainDecision, RetrainPolicy, RetrainState, decide_retrain

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

__all__ = ["MAX_RESUMES", "Flywheel", "cron_window", "retrain_policy"]

log = logging.getLogger(__name__)

#: Resumptions of one round after which, still unfinished, it is failed instead of resumed again.
MAX_RESUMES = 3


def retrain_policy(settings: Settings) -> RetrainPolicy:
    r = settings.retrain
    return RetrainPolicy(
        min_new_prompts=r.min_new_prompts,
        per_task=r.mode == "per_task",
        interval_seconds=r.interval_seconds,
        scheduled_by_cron=r.cron is not None,
        cooldown_seconds=r.cooldown_seconds,
        max_staleness_seconds=r.max_staleness_seconds,
        staleness_min_prompts=r.staleness_min_prompts,
        budget_samples=r.budget_samples,
        max_consecutive_rejections=r.max_consecutive_rejections,
        backoff_seconds=r.backoff_seconds,
    )


def cron_window(cron: str, *, since: float, now: float) -> tuple[float | None, float | None]:
    """(first fire time after `since` if it is not after `now`, next fire time after `now`), UTC crontab."""
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(cron, timezone=UTC)
    first = trigger.get_next_fire_time(None, datetime.fromtimestamp(since + 1, UTC))
    upcoming = trigger.get_next_fire_time(None, datetime.fromtimestamp(now + 1, UTC))
    opened = first.timestamp() if first is not None and first.timestamp() <= now else None
    return opened, upcoming.timestamp() if upcoming is not None else None


class Flywheel:
    def __init__(
        self,
        settings: Settings,
        state: State,
        metrics: DaemonMetrics,
        *,
        round_command: Sequence[str],
        config_path: Path | None = None,
        relay: Callable[[str, str], str] | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.model = settings.model.served_name
        self.controls = Controls(state.db)
        self.rounds = RoundStore(state.db, state.rounds_dir)
        self.lease = Lease(state.db, "round", stale_after_s=settings.daemon.lock_stale_seconds)
        self.launcher = RoundLauncher(
            round_command,
            drain_s=settings.daemon.drain_seconds,
            on_exit=self._round_exited,
            relay=relay,
            timeout_s=settings.daemon.round_timeout_seconds,
        )
        self.last_decision: RetrainDecision | None = None
        self._config_path = config_path
        self._config_mtime = config_path.stat().st_mtime if config_path else None
        self._started_at = time.time()
        self._job_errors = 0
        self._observed = self.rounds.ended_ids()
        self._scheduler: BackgroundScheduler | None = None

    # ------------------------------------------------------------------ deciding
    def seed_metrics(self) -> None:
        """Last successes survive a restart: read them from the rounds table once, at start."""
        last = self.rounds.last_done_at(self.model)
        if last is not None:
            self.metrics.last_success.labels("round").set(last)

    def inputs(self, now: float) -> RetrainState:
        latest = self.rounds.latest(self.model)
        finished = latest.updated_at if latest is not None and latest.status != "running" else None
        if self.launcher.last_exit_at is not None:
            # A round process that died before recording anything still starts the cooldown: no crash loop.
            finished = max(finished or 0.0, self.launcher.last_exit_at)
        since = latest.started_at if latest is not None else self._started_at
        opened, upcoming = (None, None)
        if self.settings.retrain.cron:
            opened, upcoming = cron_window(self.settings.retrain.cron, since=since, now=now)
        return RetrainState(
            now=now,
            new_prompts={task: counts.new for task, counts in self.state.buffer.stats().tasks.items()},
            last_started_at=latest.started_at if latest is not None else None,
            last_finished_at=finished,
            consecutive_rejections=self._consecutive_rejections(),
            cron_opened_at=opened,
            next_cron_at=upcoming,
            samples_per_prompt=self.settings.generate.n,
            paused=self.paused(),
            paused_by=self.paused_by(),
            running=self.launcher.running or self.lease.holder() is not None,
        )

    def paused(self) -> bool:
        """Paused by an operator, or (never told either way) by the `retrain.paused` setting."""
        return self.controls.paused(default=self.settings.retrain.paused)

    def paused_by(self) -> str:
        """Who paused automatic rounds, as the status and the policy's reason say it."""
        reason = self.controls.pause_reason()
        if reason is None:
            return "the config (retrain.paused: true)"
        return f"an operator: {reason}" if reason else "an operator"

    def dry_run(self, now: float | None = None) -> RetrainDecision:
        """What the policy would decide now, without acting or counting it."""
        return decide_retrain(retrain_policy(self.settings), self.inputs(time.time() if now is None else now))

    def evaluate(self) -> RetrainDecision:
        """One scheduler tick: reload the config if it changed, resume or start a round if due."""
        self.reload()
        now = time.time()
        unfinished = self.rounds.unfinished(self.model)
        if unfinished is not None and not self.launcher.running and self.lease.holder() is None:
            decision = self._resume(unfinished)
        else:
            decision = decide_retrain(retrain_policy(self.settings), self.inputs(now))
            if decision.trigger and not self.launcher.start(tasks=decision.tasks, max_prompts=decision.max_prompts):
                decision = RetrainDecision(False, "running", "a round is running")
        self.metrics.policy_decisions.labels(decision.rule, str(decision.trigger).lower()).inc()
        self.metrics.policy_alert.set(1 if decision.alert else 0)
        self.metrics.round_running.set(1 if self.launcher.running else 0)
        if decision.alert and (self.last_decision is None or self.last_decision.alert != decision.alert):
            log.error("retrain policy alert: %s", decision.alert)
        if decision.trigger:
            log.info("round triggered (%s): %s", decision.rule, decision.reason)
        self.last_decision = decision
        return decision

    def _resume(self, unfinished: RoundRecord) -> RetrainDecision:
        """Resume an interrupted round, or give it up (failed, with the reason) after MAX_RESUMES attempts."""
        attempts = self.controls.count_resume(unfinished.id)
        if attempts > MAX_RESUMES:
            reason = f"still unfinished after {attempts - 1} resumptions (last completed step {unfinished.step!r})"
            self.rounds.fail(unfinished.id, reason)
            log.error("round %d %s", unfinished.id, reason)
            return RetrainDecision(False, "resume", f"round {unfinished.id} {reason}")
        self.launcher.start()
        return RetrainDecision(True, "resume", f"resuming round {unfinished.id} after its step {unfinished.step!r}")

    def trigger(self, *, tasks: Sequence[str] = (), max_prompts: int | None = None, reason: str) -> bool:
        """An operator's round: regardless of policy and pause, but never beside a running one."""
        if self.lease.holder() is not None or not self.launcher.start(tasks=tasks, max_prompts=max_prompts):
            return False
        self.controls.reset_rejections()
        log.info("round triggered by an operator: %s", reason)
        self.metrics.policy_decisions.labels("manual", "true").inc()
        return True

    def reload(self) -> None:
        if self._config_path is None:
            return
        try:
            mtime = self._config_path.stat().st_mtime
        except OSError as exc:
            log.error("cannot stat the config file %s (keeping the settings in use): %s", self._config_path, exc)
            self.metrics.config_reload_errors.inc()
            return
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            fresh = load_settings(self._config_path)
            build_scorers(fresh)  # a scorer that cannot be built (a python module that does not import) is refused
        except TaoflowError as exc:
            log.error("the changed config is invalid, keeping the settings in use: %s", exc)
            self.metrics.config_reload_errors.inc()
            return
        if fresh.retrain != self.settings.retrain:
            log.info("retrain policy reloaded from %s", self._config_path)
        self.settings = fresh
        self._schedule_jobs()

    # ------------------------------------------------------------------ running
    def run(self, stop: threading.Event) -> None:
        """The supervised scheduler task: until `stop`; raises if evaluations keep failing."""
        from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300}
        )

        def on_job(event: JobExecutionEvent) -> None:
            self._job_errors = self._job_errors + 1 if event.exception is not None else 0

        scheduler.add_listener(on_job, EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
        self._scheduler = scheduler
        self._schedule_jobs()
        scheduler.start()
        try:
            while not stop.wait(1.0):
                if self._job_errors >= 5:
                    raise RuntimeError(f"the policy evaluation failed {self._job_errors} times in a row (see the log)")
        finally:
            scheduler.shutdown(wait=True)
            self._scheduler = None
            self.launcher.stop()  # at once, beside the other tasks' draining: the round checkpoints now

    def _schedule_jobs(self) -> None:
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        scheduler = self._scheduler
        if scheduler is None:
            return  # not running yet: run() schedules the jobs
        r = self.settings.retrain
        scheduler.add_job(
            self.evaluate,
            IntervalTrigger(seconds=r.evaluate_interval_seconds, timezone=UTC),
            id="evaluate",
            replace_existing=True,
            next_run_time=datetime.now(UTC),
        )
        if r.cron:
            scheduler.add_job(
                self.evaluate, CronTrigger.from_crontab(r.cron, timezone=UTC), id="cron", replace_existing=True
            )
        elif scheduler.get_job("cron") is not None:
            scheduler.remove_job("cron")

    def stop_round(self) -> None:
        """Stop a running round (the scheduler task does this when it stops; idempotent)."""
        self.launcher.stop()

    # ------------------------------------------------------------------ history
    def _consecutive_rejections(self) -> int:
        count = 0
        for record in self.rounds.done_since(self.model, self.controls.rejections_reset_at()):
            if record.summary.gate is not None and record.summary.gate.passed:
                break
            count += 1
        return count

    def _round_exited(self, code: int) -> None:
        self.metrics.round_running.set(0)
        self.metrics.round_exits.labels(EXIT_OUTCOMES.get(code, "error")).inc()
        latest = self.rounds.latest(self.model)
        if latest is None or latest.status == "running" or latest.id in self._observed:
            return  # interrupted (observed once it finishes), or finished before this daemon started
        self._observed.add(latest.id)
        for step, seconds in latest.summary.seconds().items():
            self.metrics.step_seconds.labels(step).observe(seconds)
        if latest.summary.score is not None and latest.files.has_scores():
            for record, candidates in latest.files.scored():
                self.metrics.candidates.inc(len(candidates))
                for candidate in candidates:
                    if candidate.score is not None:
                        self.metrics.candidate_scores.labels(record.task).observe(candidate.score)
        if latest.status == "done":
            self.metrics.last_success.labels("round").set(latest.updated_at)
            gate = latest.summary.gate
            if gate is not None and gate.passed:
                self.metrics.last_success.labels("gate").set(latest.updated_at)
            if gate is not None and gate.promoted:
                self.metrics.last_success.labels("promote").set(latest.updated_at)

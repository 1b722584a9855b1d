"""The flywheel's decisions on a real state database; the round process is a short real process here
(the real round under the daemon is the soak test's)."""

import os
import sys
import time

import pytest
import yaml

from taoflow.connectors.records import Message, PromptRecord
from taoflow.daemon.service.flywheel import MAX_RESUMES, cron_window
from taoflow.daemon.service.running import Service
from taoflow.daemon.settings import load_settings
from taoflow.daemon.store.rounds import RoundStore
from taoflow.daemon.store.summaries import GenerateSummary, PrepareSummary, ScoreSummary, SkipSummary
from tests.support.processes import poll_until


@pytest.fixture
def service(tmp_path):
    config = tmp_path / "taoflow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"state_dir": str(tmp_path / "state")},
                "daemon": {"admin_token": "flywheel-test-token-0123456789"},
                "retrain": {"min_new_prompts": 3, "cooldown_seconds": 0},
            }
        )
    )
    svc = Service(load_settings(config), config_path=config)
    svc.flywheel.launcher._command = [sys.executable, "-c", "pass"]
    yield svc
    svc.flywheel.stop_round()
    svc.state.close()


def add_prompts(service, n, task="math"):
    records = [PromptRecord(f"{task}-{i}", task, (Message("user", f"{task} question {i}?"),)) for i in range(n)]
    service.state.buffer.add_many([(r, None) for r in records], source="test")


def test_a_policy_change_in_the_file_applies_without_restart_and_a_bad_one_is_refused(service, tmp_path):
    add_prompts(service, 2)
    assert service.flywheel.evaluate().rule == "min_prompts"
    config = tmp_path / "taoflow.yaml"
    data = yaml.safe_load(config.read_text())
    data["retrain"]["min_new_prompts"] = 2
    config.write_text(yaml.safe_dump(data))
    bump_mtime(config)
    decision = service.flywheel.evaluate()
    assert (decision.trigger, decision.rule) == (True, "ready")
    data["retrain"]["min_new_prompts"] = 0  # invalid
    config.write_text(yaml.safe_dump(data))
    bump_mtime(config)
    poll_until(lambda: not service.flywheel.launcher.running, deadline_s=10)
    service.flywheel.evaluate()
    assert service.flywheel.settings.retrain.min_new_prompts == 2
    assert service.registry.get_sample_value("taoflow_config_reload_errors_total") == 1


def test_a_reload_with_an_impossible_cron_keeps_the_running_policy(service, tmp_path):
    rewrite(tmp_path, retrain={"cron": "0 25 * * *"})  # hour 25: five fields, but no such time
    for _ in range(8):  # more evaluations than the scheduler tolerates failing in a row
        service.flywheel.evaluate()
    assert service.flywheel.settings.retrain.cron is None
    assert service.registry.get_sample_value("taoflow_config_reload_errors_total") == 1


def test_a_reload_with_a_scorer_that_cannot_be_built_keeps_the_running_settings(service, tmp_path):
    rewrite(tmp_path, score={"tasks": {"math": [{"type": "python", "params": {"callable": "no_such_module_here:x"}}]}})
    service.flywheel.evaluate()
    assert service.flywheel.settings.score.tasks == {}
    assert service.registry.get_sample_value("taoflow_config_reload_errors_total") == 1


def rewrite(tmp_path, **sections):
    """Change sections of the daemon's config file, as an operator edits it (the daemon reloads it)."""
    config = tmp_path / "taoflow.yaml"
    data = yaml.safe_load(config.read_text())
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    config.write_text(yaml.safe_dump(data))
    bump_mtime(config)


def bump_mtime(path):
    later = time.time() + 5
    os.utime(path, (later, later))


def test_an_unfinished_round_is_resumed_first_and_given_up_after_repeated_interruptions(service):
    add_prompts(service, 10)
    rounds = RoundStore(service.state.db, service.state.rounds_dir)
    record = rounds.start("taoflow")
    rounds.complete_step(record.id, "prepare", PrepareSummary(prompts=0))
    for _ in range(MAX_RESUMES):
        decision = service.flywheel.evaluate()
        assert (decision.trigger, decision.rule) == (True, "resume"), decision
        assert f"resuming round {record.id} after its step 'prepare'" in decision.reason
        poll_until(lambda: not service.flywheel.launcher.running, deadline_s=10)
    decision = service.flywheel.evaluate()
    assert decision.rule == "resume" and not decision.trigger
    failed = rounds.get(record.id)
    assert failed.status == "failed" and f"after {MAX_RESUMES} resumptions" in failed.reason
    assert service.flywheel.evaluate().rule == "ready"  # and the flywheel moves on


def test_cron_windows_in_utc():
    day = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # a midnight, UTC
    opened, upcoming = cron_window("0 2 * * *", since=day, now=day + 3 * 3600)
    assert (opened, upcoming) == (day + 2 * 3600, day + 86400 + 2 * 3600)
    opened, upcoming = cron_window("0 2 * * *", since=day + 2 * 3600, now=day + 3 * 3600)
    assert opened is None  # the round that window started is the last one


def test_a_round_process_that_dies_before_recording_anything_still_starts_the_cooldown(service, tmp_path):
    rewrite(tmp_path, retrain={"cooldown_seconds": 600})
    add_prompts(service, 5)
    service.flywheel.launcher._command = [sys.executable, "-c", "raise SystemExit(1)"]
    assert service.flywheel.evaluate().rule == "ready"
    poll_until(lambda: service.flywheel.launcher.last_exit_at is not None, deadline_s=10)
    assert service.flywheel.evaluate().rule == "cooldown"  # not a new process every evaluation
    poll_until(
        lambda: service.registry.get_sample_value("taoflow_round_process_exits_total", {"outcome": "error"}) == 1,
        deadline_s=5,
    )


def test_a_round_that_found_nothing_to_train_costs_no_cooldown(service, tmp_path):
    rewrite(tmp_path, retrain={"cooldown_seconds": 600})
    add_prompts(service, 5)
    service.flywheel.launcher._command = [sys.executable, "-c", "raise SystemExit(5)"]  # `taoflow round`'s "nothing"
    assert service.flywheel.evaluate().rule == "ready"
    poll_until(
        lambda: (
            service.registry.get_sample_value("taoflow_round_process_exits_total", {"outcome": "nothing_to_train"}) == 1
        ),
        deadline_s=10,
    )
    assert service.flywheel.launcher.last_exit_at is None
    assert service.flywheel.dry_run().rule == "ready"


def test_a_skipped_round_starts_the_cooldown_and_is_counted_with_its_judge(service, tmp_path):
    rewrite(tmp_path, retrain={"cooldown_seconds": 600})
    add_prompts(service, 5)
    rounds = RoundStore(service.state.db, service.state.rounds_dir)
    # What `taoflow round` leaves when its candidates gave nothing to learn: a skipped round, exit 6.
    record = rounds.start(service.flywheel.model)
    for step, summary in [("prepare", PrepareSummary(prompts=5)), ("generate", GenerateSummary(candidates=40))]:
        record = rounds.complete_step(record.id, step, summary)
    judges = {
        "support": {
            "calls": {"ok": 38, "retried": 3, "failed": 2},
            "failures": {"malformed": 4, "timeout": 2},
            "prompt_tokens": 9000,
            "completion_tokens": 400,
            "cached": 5,
        }
    }
    record = rounds.complete_step(record.id, "score", ScoreSummary(tasks={}, judges=judges))
    rounds.skip(record.id, "train", SkipSummary(skipped="no candidate of 5 prompts ...: nothing to learn"))
    assert service.flywheel.evaluate().rule == "cooldown"  # it did work: its end starts the cooldown
    service.flywheel.launcher._command = [sys.executable, "-c", "raise SystemExit(6)"]
    assert service.flywheel.launcher.start()
    poll_until(
        lambda: service.registry.get_sample_value("taoflow_round_process_exits_total", {"outcome": "skipped"}) == 1,
        deadline_s=10,
    )
    value = service.registry.get_sample_value
    assert value("taoflow_rounds_total", {"result": "skipped"}) == 1
    assert [value("taoflow_judge_calls_total", {"outcome": o}) for o in ("ok", "retried", "failed")] == [38, 3, 2]
    assert value("taoflow_judge_unscored_candidates_total", {"reason": "malformed"}) == 4
    assert value("taoflow_judge_tokens_total", {"kind": "prompt"}) == 9000
    assert value("taoflow_judge_cached_verdicts_total") == 5

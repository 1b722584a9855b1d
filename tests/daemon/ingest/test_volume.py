"""A burst through a real broker into a capped buffer while rounds consume (small here; bench/volume.py runs a
million messages): the stream never waits, the buffer stays within its cap and fresh, every task keeps its
share, and every message is accounted for."""

from tests.support.volume import SHARES, run

MESSAGES, CAP = 20_000, 1_000


def test_a_burst_flows_through_a_full_buffer_and_every_message_is_accounted_for(kafka_bootstrap, tmp_path):
    result = run(kafka_bootstrap, tmp_path, messages=MESSAGES, cap=CAP, round_every_s=0.5)
    report = result.report
    assert not result.ever_paused  # evict_oldest: the consumer never waits for rounds
    assert report.read == MESSAGES and not report.dead_lettered and not report.skipped
    # read = held (untrained and consumed) + duplicates + evicted
    assert report.read == result.held + report.duplicates + result.evicted
    assert report.evicted == result.evicted > 0 and result.rounds > 0
    assert sum(result.new_per_task.values()) <= CAP
    # Every task, quiet ones too, holds its equal share of the cap once the burst is over.
    assert result.new_per_task == {task: CAP // len(SHARES) for task in SHARES}
    assert result.newest_age_s < 30  # the freshest traffic is what is held

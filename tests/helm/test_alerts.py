"""Every alert of the chart, evaluated by Prometheus' own rule engine (`promtool test rules`): the rules are
rendered from the chart (default thresholds and non-default ones), and each alert gets input series for its
firing case, its quiet case and its edges (just under the threshold or the `for:` time, the series absent)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.helm.chart import ALERTS, by_kind, prometheus_binary, render

# The chart's defaults for a streaming source, and every threshold changed (plus a job label of its own).
DEFAULTS: dict[str, Any] = {"metrics": {"prometheusRule": {"enabled": True}}, "settings": {"source": {"kind": "kafka"}}}
CHANGED: dict[str, Any] = {
    "fullnameOverride": "flywheel",
    "metrics": {
        "prometheusRule": {
            "enabled": True,
            "job": "taoflow-prod",
            "daemonDownFor": "1m",
            "replicaUnreachableFor": "2m",
            "noRoundSuccessHours": 6,
            "ingestionStalledMinutes": 10,
            "deadLetterRatePerMinute": 2,
            "rollbackAlertMinutes": 15,
            "captureLagSeconds": 300,
        }
    },
    "settings": {"source": {"kind": "s3"}},
}


@dataclass(frozen=True)
class Thresholds:
    job: str
    down_min: int
    unreachable_min: int
    round_h: int
    stalled_min: int
    dead_per_min: float
    rollback_min: int
    lag_s: int


def thresholds(values: dict[str, Any]) -> Thresholds:
    r = values["metrics"]["prometheusRule"]
    return Thresholds(
        job=r.get("job") or values.get("fullnameOverride") or "tf-taoflow",  # release tf: the Service's name
        down_min=int(str(r.get("daemonDownFor", "3m")).removesuffix("m")),
        unreachable_min=int(str(r.get("replicaUnreachableFor", "5m")).removesuffix("m")),
        round_h=r.get("noRoundSuccessHours", 48),
        stalled_min=r.get("ingestionStalledMinutes", 30),
        dead_per_min=r.get("deadLetterRatePerMinute", 10),
        rollback_min=r.get("rollbackAlertMinutes", 60),
        lag_s=r.get("captureLagSeconds", 900),
    )


def alert_rules(values: dict[str, Any]) -> dict[str, Any]:
    (rule,) = by_kind(render(values), "PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def fired(rules: dict[str, Any], name: str, **labels: str) -> list[dict[str, Any]]:
    """The alert as promtool must see it firing: its rule's labels and annotations, plus the series' labels."""
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name]
    return [{"exp_labels": {**rule["labels"], **labels}, "exp_annotations": rule["annotations"]}]


def check(series: list[dict[str, str]], name: str, expected: dict[str, list[Any]], *, interval: str = "1m") -> dict:
    """One promtool test: input series, then `expected[eval_time]` alerts of `name` at each time."""
    return {
        "interval": interval,
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": at, "alertname": name, "exp_alerts": alerts} for at, alerts in expected.items()
        ],
    }


def cases(rules: dict[str, Any], t: Thresholds) -> dict[str, list[dict]]:
    """Per alert, the promtool tests: firing, quiet, and the edges."""
    job = f'job="{t.job}"'
    gw = f'job="{t.job}-gateway"'
    lag_min = t.lag_s // 60
    up = f"up{{{job}}}"
    d = t.down_min
    round_s = t.round_h * 3600
    fires = lambda name, **labels: fired(rules, name, **labels)  # noqa: E731
    return {
        "TaoflowDaemonDown": [
            # Scraped, then down at 2m: pending until the `for:` time has passed, firing after, resolved when up.
            check(
                [{"series": up, "values": f"1 1 0x{d + 2} 1x5"}],
                "TaoflowDaemonDown",
                {f"{d + 1}m": [], f"{d + 2}m": fires("TaoflowDaemonDown"), f"{d + 5}m": []},
            ),
            # Never scraped at all (the target vanished): absent fires with the job's label.
            check(
                [{"series": 'up{job="something-else"}', "values": f"1x{d + 3}"}],
                "TaoflowDaemonDown",
                {f"{d - 1}m": [], f"{d + 1}m": fires("TaoflowDaemonDown", job=t.job)},
            ),
            check([{"series": up, "values": f"1x{d + 10}"}], "TaoflowDaemonDown", {f"{d + 5}m": []}),
        ],
        "TaoflowSourceDown": [
            # The source retries an outage (task down): fires after 5 m, clears when it is back.
            check(
                [
                    {"series": up, "values": "1x30"},
                    {"series": f'taoflow_task_up{{{job},task="source"}}', "values": "1 0x10 1x10"},
                    {"series": f"taoflow_source_last_poll_timestamp_seconds{{{job}}}", "values": "0+60x30"},
                ],
                "TaoflowSourceDown",
                {"5m": [], "7m": fires("TaoflowSourceDown"), "15m": []},
            ),
            # Polls stop (the last poll stays at 0): stale once time() passes the threshold, then 5 m.
            check(
                [
                    {"series": up, "values": f"1x{t.stalled_min + 10}"},
                    {"series": f'taoflow_task_up{{{job},task="source"}}', "values": f"1x{t.stalled_min + 10}"},
                    {
                        "series": f"taoflow_source_last_poll_timestamp_seconds{{{job}}}",
                        "values": f"0x{t.stalled_min + 10}",
                    },
                ],
                "TaoflowSourceDown",
                {f"{t.stalled_min + 5}m": [], f"{t.stalled_min + 6}m": fires("TaoflowSourceDown")},
            ),
            # No poll ever reported while the daemon is up: absent counts as down.
            check(
                [
                    {"series": up, "values": "1x10"},
                    {"series": f'taoflow_task_up{{{job},task="source"}}', "values": "1x10"},
                ],
                "TaoflowSourceDown",
                {"4m": [], "6m": fires("TaoflowSourceDown", job=t.job)},
            ),
            # The daemon itself is gone: that is TaoflowDaemonDown's page, not this one.
            check([{"series": up, "values": "0x10"}], "TaoflowSourceDown", {"8m": []}),
            # Polls every minute and the task up: quiet.
            check(
                [
                    {"series": up, "values": f"1x{t.stalled_min + 10}"},
                    {"series": f'taoflow_task_up{{{job},task="source"}}', "values": f"1x{t.stalled_min + 10}"},
                    {
                        "series": f"taoflow_source_last_poll_timestamp_seconds{{{job}}}",
                        "values": f"0+60x{t.stalled_min + 10}",
                    },
                ],
                "TaoflowSourceDown",
                {f"{t.stalled_min + 8}m": []},
            ),
        ],
        "TaoflowNoRoundSuccess": [
            # Last success at 0: stale once time() passes the threshold, firing 15 m later; quiet while fresh.
            check(
                [
                    {
                        "series": f'taoflow_last_success_timestamp_seconds{{{job},stage="round"}}',
                        "values": f"0x{t.round_h * 12 + 12}",
                    }
                ],
                "TaoflowNoRoundSuccess",
                {f"{round_s // 60 + 10}m": [], f"{round_s // 60 + 20}m": fires("TaoflowNoRoundSuccess")},
                interval="5m",
            ),
            check(
                [
                    {
                        "series": f'taoflow_last_success_timestamp_seconds{{{job},stage="round"}}',
                        "values": f"0+300x{t.round_h * 12 + 12}",
                    }
                ],
                "TaoflowNoRoundSuccess",
                {f"{round_s // 60 + 20}m": []},
                interval="5m",
            ),
        ],
        "TaoflowNoRoundEver": [
            check(
                [{"series": up, "values": f"1x{t.round_h * 12 + 12}"}],
                "TaoflowNoRoundEver",
                {
                    f"{t.round_h * 60 - 5}m": [],
                    f"{t.round_h * 60 + 10}m": fires("TaoflowNoRoundEver", job=t.job, stage="round"),
                },
                interval="5m",
            ),
            check(
                [
                    {"series": up, "values": f"1x{t.round_h * 12 + 12}"},
                    {
                        "series": f'taoflow_last_success_timestamp_seconds{{{job},stage="round"}}',
                        "values": f"0+300x{t.round_h * 12 + 12}",
                    },
                ],
                "TaoflowNoRoundEver",
                {f"{t.round_h * 60 + 10}m": []},
                interval="5m",
            ),
        ],
        "TaoflowGateRejections": [
            check(
                [{"series": f"taoflow_policy_backoff{{{job}}}", "values": "0 1x10 0x5"}],
                "TaoflowGateRejections",
                {"5m": [], "7m": fires("TaoflowGateRejections"), "14m": []},
            ),
        ],
        "TaoflowRollback": [
            # A rollback at 10 min fires at once and for the configured minutes; before it (absent) and after: quiet.
            check(
                [
                    {
                        "series": f"taoflow_last_rollback_timestamp_seconds{{{job}}}",
                        "values": f"_x9 600x{t.rollback_min + 20}",
                    }
                ],
                "TaoflowRollback",
                {
                    "5m": [],
                    "11m": fires("TaoflowRollback"),
                    f"{9 + t.rollback_min}m": fires("TaoflowRollback"),
                    f"{11 + t.rollback_min}m": [],
                },
            ),
        ],
        "TaoflowReplicaDrift": [
            check(
                [
                    {"series": f'taoflow_fleet_drift{{{job},kind="stale"}}', "values": "1x20"},
                    {"series": f'taoflow_fleet_drift{{{job},kind="unknown"}}', "values": "3x20"},
                ],
                "TaoflowReplicaDrift",
                {"9m": [], "11m": fires("TaoflowReplicaDrift")},
            ),
            # Unknown adapters alone are reported, not paged on.
            check(
                [{"series": f'taoflow_fleet_drift{{{job},kind="unknown"}}', "values": "3x20"}],
                "TaoflowReplicaDrift",
                {"15m": []},
            ),
        ],
        "TaoflowReplicaUnreachable": [
            check(
                [{"series": f"taoflow_fleet_replicas_unreachable{{{job}}}", "values": "0 1x10 0x5"}],
                "TaoflowReplicaUnreachable",
                {
                    f"{t.unreachable_min}m": [],
                    f"{t.unreachable_min + 2}m": fires("TaoflowReplicaUnreachable"),
                    "14m": [],
                },
            ),
        ],
        "TaoflowDeadLetterRate": [
            # One more dead letter per minute than the threshold: fires after 10 m; 10 % under it: quiet.
            check(
                [
                    {
                        "series": f'taoflow_records_dead_lettered_total{{{job},reason="invalid_json",source="kafka"}}',
                        "values": f"0+{t.dead_per_min + 1}x30",
                    }
                ],
                "TaoflowDeadLetterRate",
                {"10m": [], "17m": fires("TaoflowDeadLetterRate")},
            ),
            check(
                [
                    {
                        "series": f'taoflow_records_dead_lettered_total{{{job},reason="invalid_json",source="kafka"}}',
                        "values": f"0+{t.dead_per_min * 0.9}x30",
                    }
                ],
                "TaoflowDeadLetterRate",
                {"20m": []},
            ),
        ],
        "TaoflowServesErasedPrompts": [
            # The champion holds an erased prompt from 5 m: fires at once, per version; a retired adapter that
            # holds some (rolled back already) is no page, nor is one with none.
            check(
                [
                    {
                        "series": f'taoflow_adapter_erased_prompts{{{job},version="m-r0002",state="champion"}}',
                        "values": "_x4 2x10 _x15",
                    },
                    {
                        "series": f'taoflow_adapter_erased_prompts{{{job},version="m-r0001",state="retired"}}',
                        "values": "3x20",
                    },
                ],
                "TaoflowServesErasedPrompts",
                {"3m": [], "6m": fires("TaoflowServesErasedPrompts", version="m-r0002"), "25m": []},
            ),
        ],
        "TaoflowGatewayCaptureDropping": [
            # A spool fills at 5m and drops for 3 minutes: fires at once, clears 10 minutes after the last drop.
            check(
                [
                    {
                        "series": f'taoflow_gateway_capture_dropped_total{{{gw},reason="spool_full"}}',
                        "values": "0x5 5 10 15 15x20",
                    }
                ],
                "TaoflowGatewayCaptureDropping",
                {
                    "4m": [],
                    "6m": fires("TaoflowGatewayCaptureDropping"),
                    "12m": fires("TaoflowGatewayCaptureDropping"),
                    "20m": [],
                },
            ),
            # Counters from zero that never move, and the daemon's own job's drops (none exist): quiet.
            check(
                [
                    {"series": f'taoflow_gateway_capture_dropped_total{{{gw},reason="too_large"}}', "values": "0x20"},
                    {
                        "series": f'taoflow_gateway_capture_dropped_total{{{job},reason="too_large"}}',
                        "values": "0+1x20",
                    },
                ],
                "TaoflowGatewayCaptureDropping",
                {"10m": []},
            ),
        ],
        "TaoflowGatewayCaptureLag": [
            # The sink is down from 2m: the oldest record ages a minute a minute; past the threshold plus `for:`.
            check(
                [{"series": f"taoflow_gateway_capture_lag_seconds{{{gw}}}", "values": f"0 0 0+60x{lag_min + 8} 0x5"}],
                "TaoflowGatewayCaptureLag",
                {
                    f"{lag_min + 4}m": [],
                    f"{lag_min + 9}m": fires("TaoflowGatewayCaptureLag"),
                    f"{lag_min + 13}m": [],
                },
            ),
            check(
                [{"series": f"taoflow_gateway_capture_lag_seconds{{{gw}}}", "values": f"{t.lag_s}x30"}],
                "TaoflowGatewayCaptureLag",
                {"20m": []},  # at the threshold, not over it
            ),
        ],
        "TaoflowGatewayRouteReportsRefused": [
            # Refused from 3m to 5m: fires at once, clears 10 minutes after the last refusal.
            check(
                [{"series": f"taoflow_gateway_route_reports_refused_total{{{gw}}}", "values": "0x3 60 120 180x20"}],
                "TaoflowGatewayRouteReportsRefused",
                {
                    "2m": [],
                    "4m": fires("TaoflowGatewayRouteReportsRefused"),
                    "14m": fires("TaoflowGatewayRouteReportsRefused"),
                    "16m": [],
                },
            ),
            check(
                [{"series": f"taoflow_gateway_route_reports_refused_total{{{gw}}}", "values": "0x20"}],
                "TaoflowGatewayRouteReportsRefused",
                {"10m": []},  # a counter from zero that never moves
            ),
        ],
        "TaoflowShadowOverBudget": [
            # From 2m, 3 mirrors beside 1 client request (0.75 of what is in flight) against a 0.5 budget: fires after
            # 5 m, clears when the mirrors drain.
            check(
                [
                    {"series": f"taoflow_gateway_shadow_inflight{{{gw}}}", "values": "1 1 3x8 1x5"},
                    {"series": f"taoflow_gateway_inflight{{{gw}}}", "values": "1x15"},
                    {"series": f"taoflow_gateway_shadow_max_share{{{gw}}}", "values": "0.5x15"},
                ],
                "TaoflowShadowOverBudget",
                {"6m": [], "8m": fires("TaoflowShadowOverBudget"), "12m": []},
            ),
            # Within budget (1 of 2), and no shadow at all (a budget of 0 with nothing mirrored): quiet.
            check(
                [
                    {"series": f"taoflow_gateway_shadow_inflight{{{gw}}}", "values": "1x10 0x10"},
                    {"series": f"taoflow_gateway_inflight{{{gw}}}", "values": "1x20"},
                    {"series": f"taoflow_gateway_shadow_max_share{{{gw}}}", "values": "0.5x10 0x10"},
                ],
                "TaoflowShadowOverBudget",
                {"8m": [], "18m": []},
            ),
        ],
    }


@pytest.mark.parametrize("values", [DEFAULTS, CHANGED], ids=["defaults", "changed"])
def test_every_alert_fires_when_it_should_and_only_then(values, tmp_path):
    promtool = prometheus_binary("promtool")
    rules = alert_rules(values)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    per_alert = cases(rules, thresholds(values))
    assert set(per_alert) == set(ALERTS) == {r["alert"] for g in rules["groups"] for r in g["rules"]}
    suite = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [c for cs in per_alert.values() for c in cs],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    result = subprocess.run([promtool, "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "SUCCESS" in result.stdout + result.stderr


def test_a_jsonl_install_has_no_source_alert():
    names = {
        r["alert"]
        for g in alert_rules({"metrics": {"prometheusRule": {"enabled": True}}})["groups"]
        for r in g["rules"]
    }
    assert names == set(ALERTS) - {"TaoflowSourceDown"}


def test_every_alert_says_what_it_means_and_the_first_command():
    for group in alert_rules(DEFAULTS)["groups"]:
        for rule in group["rules"]:
            annotations = rule["annotations"]
            assert {"summary", "description", "runbook"} <= set(annotations), rule["alert"]
            assert "taoflow " in annotations["runbook"] or "kubectl " in annotations["runbook"], rule["alert"]

"""The chart rendered by Helm itself (helm-python-sdk embeds Helm v4), and the Prometheus binaries the
alert and dashboard tests run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "taoflow"
PRODUCTION = yaml.safe_load((Path(__file__).parent / "production-values.yaml").read_text())
#: Every alert the chart ships (with a streaming source); tests/helm/test_alerts.py feeds each its cases.
ALERTS = (
    "TaoflowDaemonDown",
    "TaoflowSourceDown",
    "TaoflowNoRoundSuccess",
    "TaoflowNoRoundEver",
    "TaoflowGateRejections",
    "TaoflowRollback",
    "TaoflowReplicaDrift",
    "TaoflowReplicaUnreachable",
    "TaoflowDeadLetterRate",
    "TaoflowServesErasedPrompts",
    "TaoflowGatewayCaptureDropping",
    "TaoflowGatewayCaptureLag",
    "TaoflowGatewayRouteReportsRefused",
    "TaoflowShadowOverBudget",
)


def render(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="tf", namespace="ml", is_install=True)
    docs = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def prometheus_binary(name: str) -> str:
    """`prometheus` or `promtool` from Debian's package; a missing one fails the test with the install command."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: apt-get install -y prometheus (bash scripts/setup-prometheus.sh)")
    return found

"""Every manifest the chart renders (defaults and production values) validated strictly against the OpenAPI schemas
of the Kubernetes versions the chart supports (kubernetes-validate ships them): an unknown field, a wrong type or a
missing required field fails naming the manifest and the path. Custom resources (the Prometheus Operator's) have no
schema there: they are left out by their kind (CUSTOM), nothing else is."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.helm.chart import PRODUCTION, render

#: The range README.md's "Deploy on Kubernetes" states; the chart's kubeVersion admits it.
SUPPORTED = ("1.31.0", "1.34.0", "1.37.0")
#: Kinds from CRDs, checked by tests/helm/test_chart.py and the real-Prometheus tests instead.
CUSTOM = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


def _name(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


@pytest.mark.parametrize("version", SUPPORTED)
@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["defaults", "production"])
def test_every_manifest_validates_strictly(values: dict[str, Any] | None, version: str):
    docs = render(values)
    checked = [d for d in docs if (d["apiVersion"], d["kind"]) not in CUSTOM]
    errors = []
    for doc in checked:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{_name(doc)}: {'.'.join(map(str, e.path))}: {e.message}")
    assert errors == [], f"against Kubernetes {version}:\n" + "\n".join(errors)
    assert len(checked) >= 5, [_name(d) for d in docs]


def test_a_wrong_field_is_caught():
    """The check can fail: the daemon's StatefulSet with a misspelt field, or a string where a number goes."""
    statefulset = next(d for d in render(None) if d["kind"] == "StatefulSet")
    kubernetes_validate.validate(statefulset, SUPPORTED[0], strict=True)
    statefulset["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, SUPPORTED[0], strict=True)
    statefulset = next(d for d in render(None) if d["kind"] == "StatefulSet")
    statefulset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, SUPPORTED[0], strict=True)

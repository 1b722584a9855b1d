"""The Helm chart, linted and rendered by Helm itself (helm-python-sdk embeds Helm v4), then checked
manifest by manifest; its dashboard and alert rules checked against a running daemon's /metrics."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from taoflow.daemon.cli.main import build_parser
from taoflow.daemon.settings import load_settings
from tests.helm.chart import ALERTS, CHART, PRODUCTION, ROOT, by_kind, render
from tests.support.ports import free_port
from tests.support.processes import poll_until

SECRETISH = re.compile(r"TOKEN|PASSWORD|SECRET|API_KEY|ACCESS_KEY", re.IGNORECASE)


@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["defaults", "production"])
def test_the_chart_lints_strictly(values):
    report = helm.lint(CHART, values, strict=True, namespace="ml", kube_version="v1.31.0")
    assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["defaults", "production"])
def test_rendered_manifests_are_safe_and_consistent(values, tmp_path):
    docs = render(values)
    kinds = {d["kind"] for d in docs}
    assert "Secret" not in kinds  # secrets are referenced, never created with values in them
    (sts,) = by_kind(docs, "StatefulSet")
    pod = sts["spec"]["template"]
    spec = pod["spec"]
    assert sts["spec"]["replicas"] == 1  # one writer of the state database
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    for container in spec["containers"] + spec.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for env in container.get("env", []):
            if SECRETISH.search(env["name"]):
                assert "value" not in env and "secretKeyRef" in env["valueFrom"], env
    (container,) = spec["containers"]

    # The settings the pod reads are valid taoflow settings, with no secret in them, and the state
    # directory they name is the persistent volume.
    (config,) = [c for c in by_kind(docs, "ConfigMap") if "taoflow.yaml" in c["data"]]
    text = config["data"]["taoflow.yaml"]
    assert not re.search(r"admin_token|sasl_password|api_key|secret_access_key", text)
    (tmp_path / "taoflow.yaml").write_text(text)
    settings = load_settings(tmp_path / "taoflow.yaml")
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[str(settings.storage.state_dir)] == "data"
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["data"]
    assert mounts["/etc/taoflow"] == "config" and mounts["/tmp"] == "tmp"
    args = build_parser().parse_args(container["args"])  # what the pod runs is a command the CLI accepts
    expected = (values or {}).get("logFormat", "text")
    assert (args.command, str(args.config), args.log_format) == ("run", "/etc/taoflow/taoflow.yaml", expected)
    assert settings.daemon.admin_port == container["ports"][0]["containerPort"]

    # Selectors select the pod.
    labels = pod["metadata"]["labels"]
    (service,) = [s for s in by_kind(docs, "Service") if not s["metadata"]["name"].endswith("-gateway")]

    def selects(selector, target):
        return selector and all(target.get(k) == v for k, v in selector.items())

    assert selects(sts["spec"]["selector"]["matchLabels"], labels)
    assert selects(service["spec"]["selector"], labels)
    for policy in by_kind(docs, "NetworkPolicy"):
        assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    for monitor in by_kind(docs, "ServiceMonitor"):
        if monitor["metadata"]["name"].endswith("-gateway"):  # tests below
            continue
        assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"]["name"]


def test_production_values_reach_the_pod():
    docs = render(PRODUCTION)
    (sts,) = by_kind(docs, "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert env["TAOFLOW_DAEMON__ADMIN_TOKEN"] == {"name": "taoflow-admin", "key": "token"}
    assert env["TAOFLOW_DAEMON__METRICS_TOKEN"] == {"name": "taoflow-metrics", "key": "token"}
    (monitor,) = [
        m for m in by_kind(docs, "ServiceMonitor") if not m["metadata"]["name"].endswith("-gateway")
    ]  # the scraper holds the read-only token, never the admin one
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"] == {
        "name": "taoflow-metrics",
        "key": "token",
    }
    assert env["TAOFLOW_SOURCE__KAFKA__SASL_PASSWORD"] == {"name": "taoflow-kafka", "key": "password"}
    assert env["TAOFLOW_FLEET__API_KEY"] == {"name": "vllm-api", "key": "api-key"}
    assert "AWS_SECRET_ACCESS_KEY" not in env  # the pod's IRSA role reaches S3
    (account,) = by_kind(docs, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(":role/taoflow")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.2xlarge"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    (config,) = [c for c in by_kind(docs, "ConfigMap") if "taoflow.yaml" in c["data"]]
    fleet = yaml.safe_load(config["data"]["taoflow.yaml"])["fleet"]
    assert fleet["stage_dir"] == "/adapters" and fleet["adapter_root_on_servers"] == "/mnt/adapters"
    assert {"name": "adapters", "mountPath": "/adapters"} in container["volumeMounts"]
    (dashboard,) = [c for c in by_kind(docs, "ConfigMap") if "taoflow.json" in c["data"]]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["taoflow.json"])["uid"] == "taoflow-flywheel"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"settings": {"daemon": {"admin_token": "hunter2"}}}, "never an inline token"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"metrics": {"serviceMonitor": {"enabled": True}}}, "needs secrets.metricsToken.existingSecret"),
        ({"settings": {"source": {"kafka": {"sasl_password": "x"}}}}, "never an inline password"),
        ({"settings": {"source": {"delta": {"storage_options": {"a": "b"}}}}}, "never inline options"),
        ({"secrets": {"adminToken": {"value": "hunter2"}}}, "value"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"persistence": {"size": "lots"}}, "size"),
        ({"adapterVolume": {"enabled": True}}, "claimName"),
        ({"service": {"port": 70000}}, "port"),
        ({"replicas": 3}, "replicas"),
    ],
)
def test_bad_values_fail_with_schema_errors(values, message):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError) as failure:
        chart.render(values, name="tf", namespace="ml")
    assert message in str(failure.value), str(failure.value)


# ---------------------------------------------------------------------- dashboard and alerts
PROMQL_WORDS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "rate",
    "increase",
    "irate",
    "delta",
    "histogram_quantile",
    "time",
    "absent",
    "vector",
    "label_values",
    "label_replace",
    "offset",
    "bool",
    "topk",
    "bottomk",
    "clamp_min",
    "clamp_max",
    "abs",
    "e",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """The metrics a PromQL expression reads: identifiers outside label matchers, ranges, groupings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    return {t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr) if t.lower() not in PROMQL_WORDS}


def dashboard():
    return json.loads((CHART / "dashboards" / "taoflow.json").read_text())


def dashboard_exprs():
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_the_dashboard_is_grafana_dashboard_json():
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in board["templating"]["list"]}
    for panel in board["panels"]:
        assert {"type", "title", "gridPos"} <= set(panel)
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        for target in panel.get("targets", []):
            assert target["refId"] and target["expr"] and target["datasource"]["uid"] == "${datasource}"
            assert set(re.findall(r"\$([a-z_]+)", target["expr"])) <= variables
    covered = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("ingest", "lag", "buffer", "rounds", "step", "score", "gate", "deploys", "drift", "latency", "error"):
        assert topic in covered, topic


def scrape_daemon(tmp_path) -> str:
    """/metrics of a real `taoflow run` with a fleet configured (its one replica is down, as can happen)."""
    port = free_port()
    config = tmp_path / "taoflow.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"state_dir": str(tmp_path / "state")},
                "daemon": {"admin_port": port},
                "fleet": {"replicas": [f"http://127.0.0.1:{free_port()}"], "request_timeout_seconds": 1},
            }
        )
    )
    env = {**os.environ, "TAOFLOW_DAEMON__ADMIN_TOKEN": "t0ken-0123456789abcdef"}
    process = subprocess.Popen(
        [sys.executable, "-m", "taoflow.daemon.cli", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import httpx

        def scraped():
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer t0ken-0123456789abcdef"}
                )
            except httpx.HTTPError:
                return None
            return response.text if "taoflow_fleet_replicas{" in response.text else None

        return str(poll_until(scraped, deadline_s=60, interval_s=0.2, message="the daemon's /metrics"))
    finally:
        process.terminate()
        assert process.wait(30) == 0  # SIGTERM stops every task, the fleet loop included, and exits 0


def exposed(text: str) -> set[str]:
    """Every series name a Prometheus server would store from this exposition, samples or not."""
    names = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("_sum", "_count", "_created"),
        "gauge": ("",),
        "untyped": ("",),
    }
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if kind == "counter":  # prometheus_client names an unsampled counter's family with or without _total
                name = name.removesuffix("_total")
            names |= {name + s for s in suffixes.get(kind, ("",))}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def scrape_gateway(tmp_path) -> str:
    """/metrics of a real `taoflow gateway` (its replica down, its sink a JSON-lines directory)."""
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "fleet": {"replicas": [f"http://127.0.0.1:{free_port()}"]},
                "gateway": {
                    "port": port,
                    "daemon_url": f"http://127.0.0.1:{free_port()}",
                    "capture": {"sink": "jsonl", "jsonl_dir": str(tmp_path / "capture"), "spool_dir": str(tmp_path)},
                },
            }
        )
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "taoflow.daemon.cli", "gateway", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import httpx

        def scraped():
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics").text
            except httpx.HTTPError:
                return None

        return str(poll_until(scraped, deadline_s=60, interval_s=0.2, message="the gateway's /metrics"))
    finally:
        process.terminate()
        assert process.wait(30) == 0


@pytest.fixture(scope="module")
def daemon_metrics(tmp_path_factory):
    """What the daemon and a gateway expose (the dashboard and the alerts read both)."""
    return exposed(scrape_daemon(tmp_path_factory.mktemp("daemon"))) | exposed(
        scrape_gateway(tmp_path_factory.mktemp("gateway"))
    )


def test_every_taoflow_metric_the_dashboard_queries_is_exposed_by_the_daemon(daemon_metrics):
    wanted = {m for e in dashboard_exprs() for m in metric_names(e) if m.startswith("taoflow_")}
    assert len(wanted) >= 20
    # The last rollback's time appears with the first rollback (tests/e2e/test_monitoring.py shows it).
    assert wanted - {"taoflow_last_rollback_timestamp_seconds"} <= daemon_metrics, sorted(wanted - daemon_metrics)
    serving = {m for e in dashboard_exprs() for m in metric_names(e) if not m.startswith("taoflow_") and m != "up"}
    assert serving == {
        "vllm:e2e_request_latency_seconds_bucket",
        "http_requests_total",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:lora_requests_info",
    }  # checked against vLLM in tests/e2e


def test_every_alert_rule_reads_existing_metrics(daemon_metrics):
    docs = render(PRODUCTION)
    (rule,) = by_kind(docs, "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} == set(ALERTS)
    # `up` is Prometheus' own; the last rollback's time appears with the first rollback (tests/e2e shows it).
    later = {"up", "taoflow_last_rollback_timestamp_seconds"}
    for alert in alerts:
        used = metric_names(alert["expr"]) - later
        assert used <= daemon_metrics, (alert["alert"], sorted(used - daemon_metrics))


def test_the_readme_shows_the_production_values_the_tests_check():
    body = (Path(__file__).parent / "production-values.yaml").read_text().split("\n", 2)[2]
    assert body in (ROOT / "README.md").read_text()


def test_a_delta_source_takes_its_storage_options_from_a_secret():
    docs = render(
        {
            "secrets": {"deltaStorageOptions": {"existingSecret": "unity"}},
            **{"settings": {"source": {"kind": "delta", "delta": {"table_uri": "uc://main.serving.inference"}}}},
        }
    )
    (sts,) = by_kind(docs, "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [
        {"prefix": "TAOFLOW_SOURCE__DELTA__STORAGE_OPTIONS__", "secretRef": {"name": "unity"}}
    ]


def test_a_hosted_judge_takes_its_key_from_a_secret():
    (sts,) = by_kind(render({"secrets": {"judgeApiKey": {"existingSecret": "judge", "key": "k"}}}), "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    (env,) = [e for e in container["env"] if e["name"] == "TAOFLOW_JUDGE_API_KEY"]
    assert env["valueFrom"] == {"secretKeyRef": {"name": "judge", "key": "k"}}


def test_the_gateway_is_a_scaled_deployment_of_its_own_that_reads_routes_from_the_daemon(tmp_path):
    docs = render(PRODUCTION)
    (deployment,) = by_kind(docs, "Deployment")
    (sts,) = by_kind(docs, "StatefulSet")
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    daemon_service, gateway_service = services["tf-taoflow"], services["tf-taoflow-gateway"]
    pod = deployment["spec"]["template"]
    # The daemon's Service never selects a gateway pod, nor the gateway's a daemon pod.
    daemon_labels, gateway_labels = sts["spec"]["template"]["metadata"]["labels"], pod["metadata"]["labels"]
    assert not daemon_service["spec"]["selector"].items() <= gateway_labels.items()
    assert not gateway_service["spec"]["selector"].items() <= daemon_labels.items()
    assert gateway_service["spec"]["selector"].items() <= gateway_labels.items()
    (container,) = pod["spec"]["containers"]
    assert container["args"][-3:] == ["gateway", "--config", "/etc/taoflow/taoflow.yaml"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e for e in container["env"]}
    assert env["TAOFLOW_DAEMON__GATEWAY_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "taoflow-gateway"
    assert "TAOFLOW_DAEMON__ADMIN_TOKEN" not in env  # the gateway holds no admin rights
    assert env["TAOFLOW_GATEWAY__API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "taoflow-gateway-clients"
    assert env["TAOFLOW_INGEST__SAMPLE_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "taoflow-gateway"
    daemon_keys = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert daemon_keys["TAOFLOW_INGEST__SAMPLE_KEY"] == env["TAOFLOW_INGEST__SAMPLE_KEY"]  # both sample alike
    assert env["TAOFLOW_DAEMON__METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "taoflow-metrics"
    for item in env.values():
        if SECRETISH.search(item["name"]):
            assert "value" not in item, item
    daemon_env = {e["name"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "TAOFLOW_DAEMON__GATEWAY_TOKEN" in daemon_env  # the daemon accepts it on /v1/routes
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/var/spool/taoflow"] == "spool"
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert "replicas" not in deployment["spec"] and hpa["spec"]["minReplicas"] == 3
    assert pdb["spec"]["minAvailable"] == 2 and deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    monitors = {m["metadata"]["name"]: m for m in by_kind(docs, "ServiceMonitor")}
    assert set(monitors) == {"tf-taoflow", "tf-taoflow-gateway"}
    assert monitors["tf-taoflow-gateway"]["spec"]["selector"]["matchLabels"].items() <= gateway_labels.items()
    (scrape,) = monitors["tf-taoflow-gateway"]["spec"]["endpoints"]
    assert scrape["authorization"]["credentials"]["name"] == "taoflow-metrics"  # its /metrics takes the token
    # Both read one taoflow.yaml: routing by version, the gateway pointed at the daemon's Service.
    (config,) = [c for c in by_kind(docs, "ConfigMap") if "taoflow.yaml" in c["data"]]
    (tmp_path / "taoflow.yaml").write_text(config["data"]["taoflow.yaml"])
    settings = load_settings(tmp_path / "taoflow.yaml")
    assert settings.fleet.routing == "gateway" and settings.gateway.host == "0.0.0.0"
    assert settings.gateway.daemon_url == "http://tf-taoflow:8470"
    assert settings.gateway.capture.sink == "kafka" and str(settings.gateway.capture.spool_dir) == "/var/spool/taoflow"
    assert settings.fleet.stage_dir is not None  # the adapter volume's settings survive next to the routing
    with pytest.raises(Exception, match="gatewayToken"):
        render({"gateway": {"enabled": True}})
    with pytest.raises(Exception, match="gatewayApiKeys"):
        render({"gateway": {"enabled": True}, "secrets": {"gatewayToken": {"existingSecret": "gw"}}})
    anonymous = {"gateway": {"enabled": True}, "secrets": {"gatewayToken": {"existingSecret": "gw"}}}
    assert by_kind(render({**anonymous, "settings": {"gateway": {"allow_anonymous": True}}}), "Deployment")
    assert not by_kind(render(None), "Deployment")  # off by default


def test_rounds_on_a_ray_cluster_take_the_token_from_a_secret_and_only_taoflow_reaches_its_jobs_api():
    docs = render(
        {
            "settings": {
                "round": {"runner": "ray"},
                "ray": {"address": "http://rc-head-svc.ray.svc:8265", "exchange": {"uri": "s3://bucket/rounds"}},
            },
            "secrets": {"rayToken": {"existingSecret": "ray-token"}},
            "rayNetworkPolicy": {"enabled": True, "clusterName": "rc", "namespace": "ray"},
        }
    )
    (sts,) = by_kind(docs, "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    (env,) = [e for e in container["env"] if e["name"] == "TAOFLOW_RAY__TOKEN"]
    assert env["valueFrom"] == {"secretKeyRef": {"name": "ray-token", "key": "token"}}
    (policy,) = [p for p in by_kind(docs, "NetworkPolicy") if p["metadata"].get("namespace") == "ray"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"ray.io/cluster": "rc"}}
    within, jobs_api = policy["spec"]["ingress"]
    assert within == {"from": [{"podSelector": {"matchLabels": {"ray.io/cluster": "rc"}}}]}
    assert jobs_api["ports"] == [{"port": 8265, "protocol": "TCP"}]
    (source,) = jobs_api["from"]
    assert source["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ml"}}
    assert source["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "taoflow"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"settings": {"ray": {"token": "hunter2hunter2hunter2"}}}, "use secrets.rayToken"),
        ({"rayNetworkPolicy": {"enabled": True}}, "clusterName"),
    ],
)
def test_ray_values_that_would_leak_or_select_nothing_are_refused(values, message):
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError) as failure:
        chart.render(values, name="tf", namespace="ml")
    assert message in str(failure.value), str(failure.value)


def test_the_admin_port_admits_the_gateway_and_the_named_namespaces_only():
    """Finding: the NetworkPolicy admitted the whole namespace to the admin port."""
    (policy,) = [p for p in by_kind(render(PRODUCTION), "NetworkPolicy") if "namespace" not in p["metadata"]]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/name": "taoflow-gateway", "app.kubernetes.io/instance": "tf"}
            }
        },
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    (alone,) = by_kind(render(None), "NetworkPolicy")
    assert alone["spec"]["ingress"] == []  # no gateway, no one named: nobody (a rule without sources admits all)

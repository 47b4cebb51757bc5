"""The chart's telemetry values, rendered by the real Helm SDK and followed into injected pods.

OTLP values become the standard OTEL_* variables of the ext_proc sidecar;
the scrape values become the gateway config's telemetry.prometheus, pod
annotations, or a PodMonitor whose port is the one the injector declares; the
dashboard is a ConfigMap Grafana's sidecar picks up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc.config import parse_config_text
from extproc.inject.pod import inject
from extproc.inject.settings import Settings, SettingsError, parse_settings
from extproc.inject.sidecar import EXTPROC, PROXY, READY_PORT_NAME
from tests.test_chart import CHART, NAMESPACE, render

FIXTURE = Path(__file__).parent / "fixtures" / "pods" / "deployment-pod.yaml"
TELEMETRY_VALUES = yaml.safe_load((CHART / "ci" / "telemetry-values.yaml").read_text())
DASHBOARD = CHART / "dashboards" / "sidegate.json"


def _settings(docs: list[dict[str, Any]]) -> Settings:
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "sidegate-webhook")
    return parse_settings(yaml.safe_load(cm["data"]["settings.yaml"]))


def _gateway_config_text(docs: list[dict[str, Any]], namespace: str = NAMESPACE) -> str:
    cm = next(
        d
        for d in docs
        if d["kind"] == "ConfigMap"
        and d["metadata"]["name"] == "sidegate-config"
        and d["metadata"]["namespace"] == namespace
    )
    return str(cm["data"]["sidegate.yaml"])


def _injected(settings: Settings, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    pod = yaml.safe_load(FIXTURE.read_text())
    pod["metadata"]["annotations"].update(annotations or {})
    result = inject(pod, "apps", settings)
    assert result.skipped is None
    return result.pod


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    every = [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]
    return next(c for c in every if c["name"] == name)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def test_defaults_serve_metrics_and_annotate_pods() -> None:
    docs = render({})
    config = parse_config_text(_gateway_config_text(docs), "sidegate-config")
    assert (config.telemetry.prometheus.enabled, config.telemetry.prometheus.path) == (True, "/metrics")
    assert config.telemetry.prometheus.envoy_stats == "all"
    settings = _settings(docs)
    pod = _injected(settings)
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "15021"
    assert annotations["prometheus.io/path"] == "/metrics"
    # No OTLP endpoint: no exporter variables, but every signal names its pod.
    env = _env(_container(pod, EXTPROC))
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env
    assert "k8s.pod.name=$(SIDEGATE_POD_NAME)" in env["OTEL_RESOURCE_ATTRIBUTES"]
    assert env["SIDEGATE_POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert not [d for d in docs if d["kind"] == "PodMonitor"]
    assert not [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]


def test_otlp_values_reach_the_extproc_sidecar_only() -> None:
    docs = render(TELEMETRY_VALUES)
    pod = _injected(_settings(docs))
    env = _env(_container(pod, EXTPROC))
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_EXPORTER_OTLP_HEADERS"] == {
        "secretKeyRef": {"name": "sidegate-provider-keys", "key": "otlp-headers"}
    }
    assert env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    # Envoy and the app get none of it (the headers may carry a collector's credentials).
    for name in (PROXY, "app"):
        assert not [n for n in _env(_container(pod, name)) if n.startswith("OTEL_")], name
    # scrapeAnnotations: false
    assert not [a for a in pod["metadata"]["annotations"] if a.startswith("prometheus.io/")]
    config = parse_config_text(_gateway_config_text(docs, "apps"), "apps/sidegate-config")
    assert config.telemetry.prometheus.envoy_stats == "used"


def test_user_resource_attributes_come_after_ours() -> None:
    settings = parse_settings(
        {"otlp": {"env": {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod"}}}
    )
    env = _env(_container(_injected(settings), EXTPROC))
    attributes = env["OTEL_RESOURCE_ATTRIBUTES"]
    assert attributes.startswith("service.name=sidegate,")
    assert attributes.endswith(",deployment.environment=prod")  # a later key wins in the SDK


def test_pod_monitor_selects_the_port_the_injector_declares() -> None:
    docs = render(TELEMETRY_VALUES)
    (monitor,) = [d for d in docs if d["kind"] == "PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE, "apps"]}
    assert monitor["spec"]["selector"] == {}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["interval"] == "15s"
    pod = _injected(_settings(docs))
    ports = [p for c in pod["spec"]["initContainers"] for p in c.get("ports", [])]
    assert [p["name"] for p in ports] == [endpoint["port"]] == [READY_PORT_NAME]
    # Only the sidecar declares it: no app port is scraped by mistake.
    assert all(p.get("name") != READY_PORT_NAME for c in pod["spec"]["containers"] for p in c.get("ports", []))


def test_dashboard_configmap_for_grafana() -> None:
    docs = render(TELEMETRY_VALUES)
    (cm,) = [d for d in docs if d["metadata"]["name"] == "sidegate-dashboard"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "AI gateway"}
    dashboard = json.loads(cm["data"]["sidegate.json"])
    assert dashboard == json.loads(DASHBOARD.read_text())


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for figure in ("Requests/s", "p50 / p99", "Time to first token", "Tokens/s", "Cost",
                   "Retries and failovers", "Quota refusals", "In flight", "Envoy upstream errors"):  # fmt: skip
        assert figure in titles, figure


def test_metrics_off_means_no_annotations_and_no_scrape_path() -> None:
    docs = render({"telemetry": {"prometheus": {"enabled": False, "podMonitor": {"enabled": True}}}})
    config = parse_config_text(_gateway_config_text(docs), "sidegate-config")
    assert not config.telemetry.prometheus.enabled
    settings = _settings(docs)
    assert settings.metrics_path is None and not settings.scrape_annotations
    pod = _injected(settings)
    assert not [a for a in pod["metadata"]["annotations"] if a.startswith("prometheus.io/")]
    assert not [d for d in docs if d["kind"] == "PodMonitor"]


def test_a_pods_own_scrape_annotations_are_kept() -> None:
    own = {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}
    pod = yaml.safe_load(FIXTURE.read_text())
    pod["metadata"]["annotations"].update(own)
    result = inject(pod, "apps", Settings())
    annotations = result.pod["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("prometheus.io/")} == own
    assert any("prometheus.io/scrape annotations are kept" in w for w in result.warnings)
    # Re-injection strips what sidegate added, never the pod's own.
    again = inject(result.pod, "apps", Settings())
    assert again.patch == []


def test_telemetry_prometheus_in_gateway_config_and_values_fails_the_render() -> None:
    import helm_python as helm

    config = (
        "providers: {o: {api: openai, base_url: 'http://o', keys: [{env: K}]}}\n"
        "models: {m: {provider: o}}\ntelemetry: {prometheus: {path: /m}}\n"
    )
    with pytest.raises(helm.HelmRenderError) as e:
        render({"gateway": {"config": config}})
    assert "telemetry.prometheus is set twice" in str(e.value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"otlp": {"endpoint": "collector:4317"}}, "otlp.endpoint: expected an http:// or https:// URL"),
        ({"otlp": {"protocol": "http/json"}}, "otlp.protocol: expected one of grpc, http/protobuf"),
        ({"otlp": {"env": {"PATH": "/x"}}}, "otlp.env: 'PATH' is not an OTEL_* variable name"),
        ({"otlp": {"headers": "a=b"}}, "unknown otlp setting(s): headers"),
        ({"metricsPath": "metrics"}, "metricsPath: expected an absolute URL path"),
    ],
)
def test_bad_injector_settings_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as e:
        parse_settings(doc)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"telemetry": {"otlp": {"protocol": "udp"}}}, "/telemetry/otlp/protocol"),
        ({"telemetry": {"otlp": {"env": {"HOME": "/"}}}}, "/telemetry/otlp/env"),
        ({"telemetry": {"prometheus": {"path": "/ready"}}}, "/telemetry/prometheus/path"),
        ({"telemetry": {"prometheus": {"envoyStats": "some"}}}, "/telemetry/prometheus/envoyStats"),
        ({"telemetry": {"dashboard": {"enabled": "yes"}}}, "/telemetry/dashboard/enabled"),
    ],
)
def test_bad_telemetry_values_fail_the_schema(values: dict[str, Any], message: str) -> None:
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as e:
        chart.validate_schema(values)
    assert message in str(e.value)

"""The Helm chart, rendered and linted by the real Helm SDK, checked without a cluster.

For every ``ci/*-values.yaml``: the schema accepts it, strict lint passes at the
oldest supported and the newest Kubernetes, every rendered object validates
against that version's schemas, and the invariants hold (labels and selectors,
webhook exclusions, TLS that really verifies, config the sidecar can load).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from extproc.config import KeySource, parse_config_text
from extproc.inject.settings import parse_settings
from extproc.inject.sidecar import KEYS_DIR
from extproc.inject.webhook import serve
from extproc.quota.config import RedisUrl
from tests.k8s import psa_restricted_problems, validate
from tests.test_webhook import _call

CHART = Path(__file__).parent.parent / "charts" / "sidegate"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
NAMESPACE = "sidegate-system"
KUBE_VERSIONS = ("1.29", "1.37")
# Custom resources (no schema in kubernetes-validate), with the API each must use.
CRD_KINDS = {
    "Certificate": "cert-manager.io/v1",
    "Issuer": "cert-manager.io/v1",
    "ClusterIssuer": "cert-manager.io/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
}


def _values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name="sidegate", namespace=NAMESPACE, is_install=True)
    docs = []
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _component(doc: dict[str, Any]) -> str | None:
    return doc["metadata"]["labels"].get("app.kubernetes.io/component")


def _one(docs: list[dict[str, Any]], kind: str, component: str = "webhook") -> dict[str, Any]:
    found = [d for d in _by_kind(docs, kind) if _component(d) in (component, None)]
    if kind not in ("Deployment", "Service", "NetworkPolicy"):
        found = _by_kind(docs, kind)
    assert len(found) == 1, f"expected one {component} {kind}, got {len(found)}"
    return found[0]


@pytest.fixture(scope="module", params=CI_VALUES, ids=lambda p: p.name)
def rendered(request: pytest.FixtureRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = _values(request.param)
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
    return values, render(values)


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
@pytest.mark.parametrize("kube", ["v1.29.0", "v1.37.0"])
def test_strict_lint(values_file: Path, kube: str) -> None:
    report = helm.lint(
        str(CHART), _values(values_file), strict=True, kube_version=kube, namespace=NAMESPACE
    )
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_objects_validate(rendered: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == CRD_KINDS[doc["kind"]]
            continue
        for version in KUBE_VERSIONS:
            validate(doc, version)


def test_labels_and_selectors(rendered: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for doc in docs:
        labels = doc["metadata"]["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ):
            assert key in labels, f"{doc['kind']} {doc['metadata']['name']} lacks {key}"
    for deployment in _by_kind(docs, "Deployment"):
        component = _component(deployment)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert selector["app.kubernetes.io/component"] == component
        assert "app.kubernetes.io/version" not in selector  # selectors must survive upgrades
        service = _one(docs, "Service", component)
        assert service["spec"]["selector"].items() <= pod_labels.items()
        for policy in _by_kind(docs, "NetworkPolicy"):
            if _component(policy) == component:
                assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    webhook_pods = _one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for pdb in _by_kind(docs, "PodDisruptionBudget"):
        assert pdb["spec"]["selector"]["matchLabels"].items() <= webhook_pods.items()


def test_webhook_configuration(rendered: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    values, docs = rendered
    mwc = _one(docs, "MutatingWebhookConfiguration")
    (hook,) = mwc["webhooks"]
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["timeoutSeconds"] <= 10
    assert hook["failurePolicy"] == values.get("webhook", {}).get("failurePolicy", "Fail")
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    excluded = next(
        e
        for e in hook["namespaceSelector"]["matchExpressions"]
        if e["key"] == "kubernetes.io/metadata.name"
    )
    assert excluded["operator"] == "NotIn"
    assert {NAMESPACE, "kube-system"} <= set(excluded["values"])
    conditions = {c["name"]: c["expression"] for c in hook["matchConditions"]}
    assert "hostNetwork" in conditions["not-host-network"]
    assert "system:nodes" in conditions["not-static-or-mirror-pod"]
    ref = hook["clientConfig"]["service"]
    service = _one(docs, "Service")
    assert (ref["name"], ref["namespace"]) == (
        service["metadata"]["name"],
        service["metadata"]["namespace"],
    )
    assert ref["port"] in [p["port"] for p in service["spec"]["ports"]]
    assert ref["path"] == "/inject"
    container_ports = {
        p["name"]
        for p in _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert service["spec"]["ports"][0]["targetPort"] in container_ports
    mode = values.get("webhook", {}).get("tls", {}).get("mode", "helm")
    if mode == "certManager":
        assert "caBundle" not in hook["clientConfig"]
        assert (
            mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == f"{NAMESPACE}/sidegate-webhook"
        )
        cert = next(
            c for c in _by_kind(docs, "Certificate") if c["metadata"]["name"] == "sidegate-webhook"
        )
        assert f"sidegate-webhook.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    else:
        assert base64.b64decode(hook["clientConfig"]["caBundle"]).startswith(
            b"-----BEGIN CERTIFICATE-----"
        )


def test_least_privilege(rendered: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    _, docs = rendered
    assert not [
        d for d in docs if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
    ]
    assert _one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    for deployment in _by_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert psa_restricted_problems(pod) == []
    test_pod = next(
        d for d in _by_kind(docs, "Pod") if d["metadata"]["annotations"]["helm.sh/hook"] == "test"
    )
    assert psa_restricted_problems(test_pod) == []


def test_configs_load_in_sidegate(rendered: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    values, docs = rendered
    configmaps = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in _by_kind(docs, "ConfigMap")
    }
    namespaces = [NAMESPACE, *values.get("gateway", {}).get("namespaces", [])]
    for ns in namespaces:
        text = configmaps[(ns, "sidegate-config")]["data"]["sidegate.yaml"]
        config = parse_config_text(text, f"{ns}/sidegate-config")
        assert (config.listen.address, config.listen.port) == ("127.0.0.1", 14000)
    settings = parse_settings(
        yaml.safe_load(configmaps[(NAMESPACE, "sidegate-webhook")]["data"]["settings.yaml"])
    )
    sidecar = values.get("sidecar", {})
    assert settings.native_sidecars == sidecar.get("native", True)
    assert settings.capture == sidecar.get("capture", "env")
    assert NAMESPACE in settings.excluded_namespaces
    assert settings.image == "ghcr.io/sidegate/sidegate:0.1.0"


@pytest.fixture
def helm_tls() -> Iterator[tuple[int, str]]:
    """The webhook serving the certificate Helm generated, with the caBundle Helm wrote."""
    docs = render({})
    secret = _one(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    ca_bundle = base64.b64decode(
        _one(docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"]
    ).decode()
    assert ca_bundle == data["ca.crt"]
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        Path(d, "tls.crt").write_text(data["tls.crt"])
        Path(d, "tls.key").write_text(data["tls.key"])
        server = serve("127.0.0.1", 0, f"{d}/tls.crt", f"{d}/tls.key", None)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield server.server_address[1], ca_bundle
        server.shutdown()
        server.server_close()


def test_helm_generated_certificate_verifies_for_the_service(helm_tls: tuple[int, str]) -> None:
    port, ca_bundle = helm_tls
    status, _ = _call(
        port, ca_bundle, "GET", "/healthz", hostname=f"sidegate-webhook.{NAMESPACE}.svc"
    )
    assert status == 200
    import ssl

    with pytest.raises(ssl.SSLCertVerificationError):
        _call(port, ca_bundle, "GET", "/healthz", hostname="sidegate-webhook.other.svc")


def test_the_certificate_is_generated_once_per_render() -> None:
    docs = render({})
    secret = _one(docs, "Secret")
    deployment = _one(docs, "Deployment")
    crt = base64.b64decode(secret["data"]["tls.crt"]).decode()
    import hashlib

    assert (
        deployment["spec"]["template"]["metadata"]["annotations"]["checksum/tls"]
        == hashlib.sha256(crt.encode()).hexdigest()
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webhook": {"timeoutSeconds": 30}}, "/webhook/timeoutSeconds"),
        ({"webhook": {"failurePolicy": "Sometimes"}}, "/webhook/failurePolicy"),
        ({"webhook": {"replicas": 0}}, "/webhook/replicas"),
        ({"sidecar": {"providers": ["cohere"]}}, "/sidecar/providers/0"),
        ({"sidecar": {"capture": "ebpf"}}, "/sidecar/capture"),
        ({"webhook": {"tls": {"mode": "external"}}}, "secretName"),
        ({"sidecar": {"listenport": 1}}, "listenport"),
        ({"gateway": {"config": {"models": {}}}}, "/gateway/config"),
        ({"state": {"redis": {"url": "http://redis:6379"}}}, "/state/redis/url"),
        ({"state": {"onUnavailable": "retry"}}, "/state/onUnavailable"),
        ({"redis": {"maxMemory": "lots"}}, "/redis/maxMemory"),
    ],
)
def test_bad_values_fail_with_the_schema_message(values: dict[str, Any], message: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as e:
        chart.validate_schema(values)
    assert message in str(e.value)


def test_notes_say_how_to_use_it() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render({}, name="sidegate", namespace=NAMESPACE, is_install=True)
    notes = next(v for k, v in files.items() if k.endswith("NOTES.txt"))
    assert "kubectl label namespace <app-namespace> sidegate.io/injection=enabled" in notes
    assert "helm test sidegate -n sidegate-system" in notes


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("models: {}\n", "gateway.config: providers is required"),
        ("providers: [\n", "gateway.config is not valid YAML"),
    ],
)
def test_bad_gateway_config_fails_the_render(config: str, message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as e:
        render({"gateway": {"config": config}})
    assert message in str(e.value)


def test_a_custom_gateway_config_replaces_the_example() -> None:
    config = (
        "providers:\n  azure: {api: openai, base_url: 'https://x.openai.azure.com/openai/v1', "
        "keys: [{file: /var/run/secrets/sidegate/keys/azure}]}\n"
        "models:\n  gpt: {provider: azure, id: gpt-4o}\n"
    )
    docs = render({"gateway": {"config": config}})
    cm = next(d for d in _by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "sidegate-config")
    loaded = parse_config_text(cm["data"]["sidegate.yaml"], "cm")
    assert list(loaded.providers) == ["azure"]


def _gateway_configs(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        d["metadata"]["namespace"]: parse_config_text(d["data"]["sidegate.yaml"], "cm")
        for d in _by_kind(docs, "ConfigMap")
        if d["metadata"]["name"] == "sidegate-config"
    }


def test_in_chart_redis_is_what_every_sidecar_shares() -> None:
    values = _values(CHART / "ci" / "redis-values.yaml")
    docs = render(values)
    service = _one(docs, "Service", "redis")
    port = service["spec"]["ports"][0]["port"]
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    configs = _gateway_configs(docs)
    assert set(configs) == {NAMESPACE, "team-a"}
    for config in configs.values():
        state = config.quota.state
        assert state.redis is not None and state.redis.url == RedisUrl(f"redis://{host}:{port}/0")
        assert state.on_unavailable.value == "closed"
        assert [q.name for q in config.quota.quotas] == ["team-budget", "user-rpm"]
    redis = _one(docs, "Deployment", "redis")
    assert redis["spec"]["replicas"] == 1 and redis["spec"]["strategy"]["type"] == "Recreate"
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert "volatile-ttl" in container["args"] and "--save" in container["args"]
    policy = _one(docs, "NetworkPolicy", "redis")
    sources = [f["namespaceSelector"]["matchLabels"] for f in policy["spec"]["ingress"][0]["from"]]
    assert {"sidegate.io/injection": "enabled"} in sources
    assert {"kubernetes.io/metadata.name": NAMESPACE} in sources


def test_external_redis_url_comes_from_the_keys_secret() -> None:
    docs = render(_values(CHART / "ci" / "external-redis-values.yaml"))
    (config,) = _gateway_configs(docs).values()
    redis = config.quota.state.redis
    assert redis is not None and redis.key_prefix == "{sidegate}:" and redis.timeout == 0.05
    assert redis.url == KeySource(file=f"{KEYS_DIR}/redis-url")
    assert not [d for d in docs if _component(d) == "redis"]
    plain = _gateway_configs(render({"state": {"redis": {"url": "rediss://cache:6380/1"}}}))
    assert plain[NAMESPACE].quota.state.redis.url == RedisUrl("rediss://cache:6380/1")  # type: ignore[union-attr]


def test_a_redis_cluster_is_named_as_one() -> None:
    (config,) = _gateway_configs(render(_values(CHART / "ci" / "redis-cluster-values.yaml"))).values()
    redis = config.quota.state.redis
    assert redis is not None and redis.cluster and redis.timeout == 0.5
    (plain,) = _gateway_configs(render({"state": {"redis": {"url": "redis://r:6379/0"}}})).values()
    assert plain.quota.state.redis is not None and not plain.quota.state.redis.cluster
    assert plain.quota.state.redis.timeout == 1.0  # the chart's default is the gateway's


def test_without_redis_values_sidecars_count_in_memory() -> None:
    docs = render({})
    assert _gateway_configs(docs)[NAMESPACE].quota.state.redis is None
    assert not [d for d in docs if _component(d) == "redis"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"redis": {"enabled": True}, "state": {"redis": {"url": "redis://elsewhere:6379"}}},
            "set only one of redis.enabled, state.redis.url and state.redis.urlSecretKey",
        ),
        (
            {
                "redis": {"enabled": True},
                "gateway": {
                    "config": "providers: {o: {api: openai, base_url: 'http://o', "
                    "keys: [{env: K}]}}\nmodels: {m: {provider: o}}\n"
                    "state: {on_unavailable: open}\n"
                },
            },
            "shared state is set twice",
        ),
    ],
)
def test_conflicting_state_fails_the_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as e:
        render(values)
    assert message in str(e.value)

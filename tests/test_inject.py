"""Golden injection tests on pods as the API server admits them.

Each fixture is injected; the patch is applied with jsonpatch and with real
``kubectl patch --local`` (they must agree, and give the desired pod); the
result validates against the Kubernetes schemas (native sidecars from 1.29,
legacy ones down to 1.25) and the semantic checks schemas miss; sending the
result back gives an empty patch.

Every pod in ``tests/fixtures/pods`` is a golden case, compared (as parsed
YAML) with the pod of the same name in ``tests/golden/inject``; a fixture
without a golden file, or a golden file without a fixture, fails. After an
intended change, run once with SIDEGATE_UPDATE_GOLDEN=1: that run rewrites the
golden files and fails on purpose; review the diff, then run without it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from extproc.inject.annotations import _CAPS, KNOWN, AnnotationError
from extproc.inject.isolation import IsolationError
from extproc.inject.pod import inject
from extproc.inject.settings import (
    _DNS1123_CHARS,
    _QUANTITY,
    Settings,
    SettingsError,
    is_dns_subdomain,
    is_quantity,
    parse_settings,
)
from extproc.inject.workload import workload_name
from tests.isolation_cases import ACCEPTED_PARAMS, REFUSAL_PARAMS
from tests.k8s import kubectl_patch, psa_restricted_problems, semantic_problems, validate

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures" / "pods"
GOLDEN = HERE / "golden" / "inject"
SETTINGS = Settings()
UPDATE = bool(os.environ.get("SIDEGATE_UPDATE_GOLDEN"))
CASES = sorted({p.stem for p in FIXTURES.glob("*.yaml")} | {p.stem for p in GOLDEN.glob("*.yaml")})


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())
    return doc


def _ns(pod: dict[str, Any]) -> str:
    return str(pod["metadata"].get("namespace", "default"))


def _containers(pod: dict[str, Any], key: str) -> list[str]:
    return [c["name"] for c in pod["spec"].get(key) or []]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


def test_golden_cases_are_found() -> None:
    assert len(CASES) >= 6, f"no golden cases found under {FIXTURES} and {GOLDEN}"


@pytest.mark.parametrize("name", CASES)
def test_injection_golden(name: str) -> None:
    fixture, golden = FIXTURES / f"{name}.yaml", GOLDEN / f"{name}.yaml"
    if not fixture.exists():
        if UPDATE:
            golden.unlink()
            pytest.fail(f"removed {golden}: it had no fixture; rerun without SIDEGATE_UPDATE_GOLDEN")
        pytest.fail(f"{golden} has no fixture {fixture}: add the input or delete the golden file")
    pod = _load(name)
    result = inject(pod, _ns(pod), SETTINGS)
    if UPDATE:
        golden.write_text(yaml.safe_dump(result.pod, sort_keys=False, width=120))
        pytest.fail(f"rewrote {golden}; review the diff and rerun without SIDEGATE_UPDATE_GOLDEN")
    assert golden.exists(), f"no golden file for {fixture}; run once with SIDEGATE_UPDATE_GOLDEN=1"
    expected = yaml.safe_load(golden.read_text())
    assert result.pod == expected, f"{golden} differs (after an intended change: see the docstring)"

    admitted = copy.deepcopy(pod)
    admitted["metadata"].pop("managedFields", None)
    if result.skipped is not None:
        assert result.patch == [] and result.pod == admitted
        return
    assert result.patch
    by_jsonpatch = jsonpatch.apply_patch(admitted, result.patch)
    assert by_jsonpatch == result.pod
    assert kubectl_patch(admitted, result.patch) == result.pod

    legacy = (
        json.loads(result.pod["metadata"]["annotations"]["sidegate.io/status"])["mode"] == "legacy"
    )
    for version in ("1.25", "1.28", "1.37") if legacy else ("1.29", "1.37"):
        validate(result.pod, version)
    assert semantic_problems(result.pod) == []
    # The user's own containers are theirs to secure; the capture init is root by design.
    exempt = (
        "sidegate-capture",
        *_containers(pod, "containers"),
        *_containers(pod, "initContainers"),
    )
    assert psa_restricted_problems(result.pod, exempt=exempt) == []

    again = inject(result.pod, _ns(pod), SETTINGS)
    assert again.patch == [], "re-injection must be a no-op"


def test_native_order_and_startup_gating() -> None:
    pod = _load("own-init-containers")
    out = inject(pod, "apps", SETTINGS).pod
    assert _containers(out, "initContainers") == [
        "sidegate-extproc",
        "sidegate-proxy",
        "warm-cache",
    ]
    extproc, proxy = out["spec"]["initContainers"][:2]
    assert extproc["restartPolicy"] == proxy["restartPolicy"] == "Always"
    assert extproc["startupProbe"]["exec"]["command"][:2] == ["sidegate", "health"]
    assert proxy["startupProbe"]["httpGet"] == {"path": "/ready", "port": 15021, "scheme": "HTTP"}
    # Keys only in the ext_proc container; Envoy and the apps never mount them.
    mounts = {
        c["name"]: {m["name"] for m in c.get("volumeMounts") or []}
        for c in out["spec"]["initContainers"] + out["spec"]["containers"]
    }
    assert [n for n, m in mounts.items() if "sidegate-keys" in m] == ["sidegate-extproc"]
    keys = next(v for v in out["spec"]["volumes"] if v["name"] == "sidegate-keys")
    assert keys["secret"]["secretName"] == "sidegate-provider-keys"
    assert "subPath" not in json.dumps(out)
    # Only the selected container gets the env; the proxy limit came from the annotation.
    indexer, metrics = out["spec"]["containers"]
    assert _env(indexer)["OPENAI_BASE_URL"] == "http://127.0.0.1:14000/v1"
    assert "ANTHROPIC_BASE_URL" not in _env(indexer)
    assert "env" not in metrics
    assert proxy["resources"]["limits"]["memory"] == "512Mi"


def test_user_values_are_never_overridden() -> None:
    pod = _load("user-base-url")
    app = inject(pod, "apps", SETTINGS).pod["spec"]["containers"][0]
    env = _env(app)
    assert env["OPENAI_BASE_URL"] == "http://my-proxy.internal/v1"
    assert env["ANTHROPIC_API_KEY"] == {"secretKeyRef": {"name": "anthropic", "key": "api-key"}}
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:14000/anthropic"
    assert env["OPENAI_API_KEY"] == "sidegate-injects-the-key"


def test_claude_code_stays_behind_the_sidecar_only_where_it_points_there() -> None:
    pod = _load("user-base-url")
    env = _env(inject(pod, "apps", SETTINGS).pod["spec"]["containers"][0])
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    # The user's own Anthropic base URL: that traffic is not the sidecar's business.
    pod["spec"]["containers"][0].setdefault("env", []).append(
        {"name": "ANTHROPIC_BASE_URL", "value": "https://my-proxy.internal"}
    )
    env = _env(inject(pod, "apps", SETTINGS).pod["spec"]["containers"][0])
    assert "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC" not in env


def test_legacy_mode_layout() -> None:
    pod = _load("legacy-capture")
    result = inject(pod, "apps", SETTINGS)
    out = result.pod
    assert _containers(out, "initContainers") == ["migrate", "sidegate-capture"]
    assert _containers(out, "containers") == ["sidegate-extproc", "sidegate-proxy", "app"]
    extproc, proxy, _ = out["spec"]["containers"]
    assert "restartPolicy" not in extproc
    assert extproc["lifecycle"]["postStart"]["exec"]["command"][-2:] == ["--wait", "120"]
    assert extproc["args"][-4:] == [
        "--drain-seconds", "20", "--drain-file", "/run/sidegate/drain-request"
    ]  # fmt: skip
    # The preStop asks the ext_proc to drain Envoy (the admin API is a Unix socket).
    assert "/run/sidegate/drain-request" in proxy["lifecycle"]["preStop"]["exec"]["command"][-1]
    capture = out["spec"]["initContainers"][1]
    assert capture["args"] == [
        "capture", "install", "--proxy-uid", "1337", "--to-port", "14000", "--ports", "80,8080",
    ]  # fmt: skip
    assert capture["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    # 45 s grace covers the 20 s drain: no warning.
    assert result.warnings == []


def test_legacy_rejects_restart_policy_on_old_schemas() -> None:
    """The native layout is refused by a 1.27 schema: proof that legacy output is needed there."""
    out = inject(_load("deployment-pod"), "apps", SETTINGS).pod
    with pytest.raises(Exception, match="restartPolicy"):
        validate(out, "1.27")


@pytest.mark.parametrize(
    ("name", "namespace", "mutate", "reason"),
    [
        ("host-network", "apps", None, "hostNetwork"),
        ("deployment-pod", "kube-system", None, "namespace kube-system is excluded"),
        (
            "deployment-pod",
            "apps",
            lambda p: p["metadata"]["labels"].update({"sidegate.io/inject": "false"}),
            "sidegate.io/inject=false",
        ),
        ("deployment-pod", "apps", lambda p: p.update({"status": {"phase": "Running"}}), "Running"),
        (
            "job-pod",
            "batch",
            lambda p: p["metadata"]["annotations"].update({"sidegate.io/native-sidecar": "false"}),
            "would never complete",
        ),
    ],
)
def test_skips(name: str, namespace: str, mutate: Any, reason: str) -> None:
    pod = _load(name)
    if mutate:
        mutate(pod)
    result = inject(pod, namespace, SETTINGS)
    assert result.skipped and reason in result.skipped
    assert result.patch == []


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        (
            {"sidegate.io/provider": "openai"},
            "unknown sidegate annotation (did you mean sidegate.io/providers?)",
        ),
        ({"sidegate.io/providers": "openai,cohere"}, "unknown provider(s) 'cohere'"),
        ({"sidegate.io/capture": "ebpf"}, "'ebpf' is not one of env, iptables, none"),
        ({"sidegate.io/capture-ports": "80,http"}, "is not a comma list of TCP ports"),
        ({"sidegate.io/native-sidecar": "yes"}, 'expected "true" or "false"'),
        ({"sidegate.io/proxy-memory": "lots"}, "'lots' is not a Kubernetes quantity"),
        ({"sidegate.io/drain-seconds": "-1"}, "expected whole seconds"),
        ({"sidegate.io/config": "Bad_Name"}, "'Bad_Name' is not a valid object name"),
        (
            {"sidegate.io/inject-containers": "api"},
            "no container named 'api' in this pod (containers: app)",
        ),
    ],
)
def test_bad_annotations_are_refused_with_the_reason(
    annotations: dict[str, str], message: str
) -> None:
    pod = _load("deployment-pod")
    pod["metadata"]["annotations"].update(annotations)
    with pytest.raises(AnnotationError) as e:
        inject(pod, "apps", SETTINGS)
    assert message in str(e.value)
    assert str(e.value).startswith("annotation sidegate.io/") or "container" in str(e.value)


def test_all_annotation_problems_reported_at_once() -> None:
    pod = _load("deployment-pod")
    pod["metadata"]["annotations"].update(
        {"sidegate.io/capture": "x", "sidegate.io/native-sidecar": "maybe"}
    )
    with pytest.raises(AnnotationError) as e:
        inject(pod, "apps", SETTINGS)
    assert len(e.value.problems) == 2


def test_a_user_container_with_our_name_is_refused() -> None:
    pod = _load("deployment-pod")
    pod["spec"]["containers"].append({"name": "sidegate-proxy", "image": "nginx"})
    with pytest.raises(AnnotationError, match="'sidegate-proxy' is reserved"):
        inject(pod, "apps", SETTINGS)


@pytest.mark.parametrize(("mutate", "says"), REFUSAL_PARAMS)
def test_pods_that_reach_the_sidecars_are_refused(mutate: Any, says: tuple[str, ...]) -> None:
    pod = _load("deployment-pod")
    mutate(pod["spec"])
    with pytest.raises(IsolationError) as e:
        inject(pod, "apps", SETTINGS)
    for text in says:
        assert text in str(e.value), str(e.value)


@pytest.mark.parametrize("mutate", ACCEPTED_PARAMS)
def test_pods_close_to_a_refusal_are_injected(mutate: Any) -> None:
    pod = _load("deployment-pod")
    mutate(pod["spec"])
    result = inject(pod, "apps", SETTINGS)
    assert result.skipped is None and result.patch
    validate(result.pod, "1.37")
    assert inject(result.pod, "apps", SETTINGS).patch == []


def test_isolation_follows_the_injector_settings() -> None:
    pod = _load("deployment-pod")
    pod["spec"]["containers"][0]["securityContext"] = {"runAsUser": 2000}
    inject(copy.deepcopy(pod), "apps", SETTINGS)  # 2000 is nobody's with the defaults
    with pytest.raises(IsolationError, match="runAsUser is 2000, the sidegate sidecars' uid"):
        inject(pod, "apps", parse_settings({"proxyUID": 2000}))
    pod = _load("deployment-pod")
    pod["metadata"]["annotations"]["sidegate.io/secret-name"] = "team-keys"
    pod["spec"]["containers"][0]["envFrom"] = [{"secretRef": {"name": "team-keys"}}]
    with pytest.raises(IsolationError, match="envFrom\\[0\\] reads Secret 'team-keys'"):
        inject(pod, "apps", SETTINGS)


def test_an_injected_pod_changed_to_mount_our_volume_is_refused() -> None:
    """Re-injection strips what the status annotation says we added, and no more."""
    injected = inject(_load("deployment-pod"), "apps", SETTINGS).pod
    app = next(c for c in injected["spec"]["containers"] if c["name"] == "app")
    app["volumeMounts"].append({"name": "sidegate-keys", "mountPath": "/keys"})
    with pytest.raises(IsolationError, match="container 'app': volumeMounts\\[1\\] mounts"):
        inject(injected, "apps", SETTINGS)


def test_misshapen_security_fields_are_not_crashed_on() -> None:
    """The API server types these before admission; a hand-made pod must still get an answer."""
    pod = _load("deployment-pod")
    app = pod["spec"]["containers"][0]
    app["volumeMounts"].append({"name": ["sidegate-keys"], "mountPath": "/k"})
    app["securityContext"] = {"runAsUser": "1337", "capabilities": {"add": "SYS_ADMIN"}}
    pod["spec"]["securityContext"] = ["not", "a", "map"]
    pod["spec"]["volumes"].append({"name": "v", "projected": {"sources": "x"}})
    assert inject(pod, "apps", SETTINGS).patch


def test_every_isolation_problem_is_reported_at_once() -> None:
    pod = _load("deployment-pod")
    app = pod["spec"]["containers"][0]
    app["volumeMounts"].append({"name": "sidegate-run", "mountPath": "/r"})
    app["securityContext"] = {"runAsUser": 1337, "privileged": True}
    with pytest.raises(IsolationError) as e:
        inject(pod, "apps", SETTINGS)
    assert len(e.value.problems) == 3, e.value.problems


def test_settings_change_the_output_and_are_checked() -> None:
    settings = parse_settings(
        {"listenPort": 15500, "providers": ["gemini"], "nativeSidecars": False, "secretName": "k"}
    )
    out = inject(_load("deployment-pod"), "apps", settings).pod
    env = _env(out["spec"]["containers"][-1])
    assert env["GOOGLE_GEMINI_BASE_URL"] == "http://127.0.0.1:15500/gemini"
    assert "OPENAI_BASE_URL" not in env
    with pytest.raises(SettingsError, match="unknown injector setting"):
        parse_settings({"listenport": 1})
    with pytest.raises(SettingsError, match=r"proxyResources\.limits\.memory"):
        parse_settings({"proxyResources": {"limits": {"memory": "much"}}})


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extproc.cli", "inject", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_offline_inject_of_workloads(tmp_path: Path) -> None:
    manifests = HERE.parent / "manifests" / "demo" / "app.yaml"
    text = manifests.read_text() if manifests.exists() else ""
    text += """
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: batch}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: registry.example.com/job:1}]
---
apiVersion: v1
kind: Service
metadata: {name: untouched}
spec: {ports: [{port: 80}]}
"""
    r = _cli("-f", "-", stdin=text)
    assert r.returncode == 0, r.stderr
    docs = list(yaml.safe_load_all(r.stdout))
    cron = next(d for d in docs if d["kind"] == "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert _containers(pod, "initContainers") == ["sidegate-extproc", "sidegate-proxy"]
    assert "ownerReferences" not in pod.get("metadata", {})
    assert next(d for d in docs if d["kind"] == "Service") == yaml.safe_load(text.split("---")[-1])
    for d in docs:
        validate(d, "1.37")
    # Idempotent offline too.
    again = _cli("-f", "-", stdin=r.stdout)
    assert again.stdout == r.stdout


def test_offline_inject_reports_bad_annotations() -> None:
    r = _cli("-f", str(FIXTURES / "deployment-pod.yaml"), "--settings", os.devnull)
    assert r.returncode == 0
    bad = (
        (FIXTURES / "deployment-pod.yaml")
        .read_text()
        .replace("annotations: {", 'annotations: {sidegate.io/capture: "tproxy", ')
    )
    r = _cli("-f", "-", stdin=bad)
    assert r.returncode == 1
    assert "annotation sidegate.io/capture: 'tproxy' is not one of env, iptables, none" in r.stderr


MIB = 1024 * 1024
ADVERSARIAL = {
    "digits": "1" * MIB + "x",
    "exponent": "1e" + "9" * MIB + "x",
    "dots": "1." * (MIB // 2),
    "label": "a" * MIB + "-",
    "commas": "," * MIB,
    "list": "8," * (MIB // 2),
}


def _fastest(fn: Any, runs: int = 3) -> float:
    """The best of a few runs: a shared CI machine only ever makes a run slower."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def test_every_known_annotation_has_a_cap() -> None:
    assert set(_CAPS) == KNOWN


@pytest.mark.parametrize("kind", list(ADVERSARIAL))
@pytest.mark.parametrize("key", sorted(KNOWN))
def test_huge_annotation_values_are_refused_fast(key: str, kind: str) -> None:
    pod = _load("deployment-pod")
    pod["metadata"]["annotations"][key] = ADVERSARIAL[kind]

    def refuse() -> None:
        with pytest.raises(AnnotationError, match=f"annotation {key}: .* characters; at most"):
            inject(pod, "apps", SETTINGS)

    assert _fastest(refuse) < 0.05


@pytest.mark.parametrize("kind", list(ADVERSARIAL))
def test_patterns_are_linear_even_without_the_caps(kind: str) -> None:
    """The caps come first, but the patterns themselves must not backtrack either."""
    value = ADVERSARIAL[kind]
    for pattern in (_QUANTITY, _DNS1123_CHARS):
        assert _fastest(lambda p=pattern: p.fullmatch(value)) < 0.05, pattern.pattern
    assert _fastest(lambda: workload_name(_owned_by(value), "ns")) < 0.05
    assert _fastest(lambda: is_dns_subdomain(value)) < 0.05


def _owned_by(name: str) -> dict[str, Any]:
    return {"metadata": {"ownerReferences": [{"kind": "Job", "name": name, "controller": True}]}}


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("100m", True), ("128Mi", True), ("1.5Gi", True), ("+.5", True), ("1e3", True),
        ("5E-3", True), ("2E", True), ("1.", True), ("1.2.3", False), ("1ki", False),
        ("Mi", False), ("1Mi\n", False), ("1e", False), ("", False), ("1" * 65, False),
    ],
)  # fmt: skip
def test_quantities(value: str, ok: bool) -> None:
    assert is_quantity(value) is ok


def test_values_within_the_caps_are_accepted() -> None:
    names = [f"c{i}-" + "x" * 56 for i in range(64)]  # 64 names of up to 60 characters
    pod = _load("deployment-pod")
    pod["spec"]["containers"] = [{"name": n, "image": "nginx"} for n in names]
    pod["metadata"]["annotations"].update(
        {"sidegate.io/inject-containers": ",".join(names), "sidegate.io/proxy-cpu": "1" * 63 + "m"}
    )
    out = inject(pod, "apps", SETTINGS).pod
    assert all("env" in c for c in out["spec"]["containers"])


@pytest.mark.parametrize(
    "status",
    ["[" * 30_000, '{"containers": 5}', '{"env": {"app": "OPENAI_BASE_URL"}}', "[]"],
)
def test_a_forged_status_annotation_is_refused(status: str) -> None:
    pod = _load("deployment-pod")
    pod["metadata"]["annotations"]["sidegate.io/status"] = status
    with pytest.raises(AnnotationError, match="not the JSON sidegate writes"):
        inject(pod, "apps", SETTINGS)


def test_many_problems_are_summarised() -> None:
    pod = _load("deployment-pod")
    pod["metadata"]["annotations"].update({f"sidegate.io/bogus-{i}": "x" for i in range(50)})
    with pytest.raises(AnnotationError) as e:
        inject(pod, "apps", SETTINGS)
    assert len(e.value.problems) == 50
    assert str(e.value).endswith("and 40 more") and len(str(e.value)) < 2000


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"capturePorts": ["http"]}, "capturePorts: expected a list of TCP ports"),
        ({"capturePorts": [70000]}, "capturePorts: expected a list of TCP ports"),
        ({"proxyResources": {"limits": "1Gi"}}, "proxyResources.limits: expected a mapping"),
        ({"excludedNamespaces": [None]}, "excludedNamespaces: expected a list of strings"),
        ({"extprocResources": {"requests": {"cpu": "1" * 100}}}, "is not a Kubernetes quantity"),
    ],
)
def test_bad_settings_name_the_key(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_settings(doc)

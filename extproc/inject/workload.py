"""The workload a pod belongs to, as quotas key it: ``<namespace>/<name>``.

Pods of one Deployment share a workload, so a per-workload quota is a limit on
the Deployment, not on each replica. The name comes from the pod's controller
(a ReplicaSet's name minus its pod-template hash, a CronJob's Job minus its
schedule suffix), else from generateName, else from the pod's own name.
"""

from __future__ import annotations

from typing import Any


def _without_schedule(job: str) -> str:
    """A CronJob's Job name minus its ``-<scheduled minute since the epoch>`` suffix."""
    base, dash, suffix = job.rpartition("-")
    if dash and len(suffix) >= 8 and suffix.isascii() and suffix.isdigit():
        return base
    return job


def workload_name(pod: dict[str, Any], namespace: str) -> str:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    owner = next(
        (r for r in meta.get("ownerReferences") or [] if r.get("controller")),
        None,
    )
    name = ""
    if owner is not None:
        name = owner.get("name", "")
        kind = owner.get("kind")
        template_hash = labels.get("pod-template-hash")
        if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            name = name[: -len(template_hash) - 1]
        elif kind == "Job":
            name = _without_schedule(name)
    if not name:
        name = (meta.get("generateName") or "").rstrip("-") or meta.get("name", "")
    return f"{namespace}/{name}" if name else namespace

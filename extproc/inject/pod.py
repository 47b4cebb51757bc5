"""From the pod as admitted to the pod we want: pure functions, no I/O.

Injection re-derives instead of appending: whatever an earlier injection added
(recorded in the ``sidegate.io/status`` annotation) is stripped first and added
again from the current settings, so the same pod always gives the same result
and an injected pod sent back gives an empty patch.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from .. import __version__
from .annotations import (
    INJECT_LABEL,
    STATUS,
    AnnotationError,
    PodOptions,
    check_container_names,
    checked_annotations,
    parse_options,
    show,
)
from .isolation import check_isolation
from .settings import Settings
from .sidecar import (
    NAMES,
    SCRAPE,
    SCRAPE_ANNOTATIONS,
    VOLUMES,
    app_env,
    capture_container,
    extproc_container,
    proxy_container,
    scrape_annotations,
    volumes,
)
from .workload import workload_name

Pod = dict[str, Any]


@dataclass
class Result:
    pod: Pod
    patch: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None
    warnings: list[str] = field(default_factory=list)


class PodError(AnnotationError):
    """The object is not shaped like a pod the API server would send; refused, not injected."""


_MAPS = ("labels", "annotations")
_LISTS = ("initContainers", "containers", "volumes")


def check_shape(pod: object) -> None:
    """Refuse, naming the field, any part of the pod this module reads that has the wrong type.

    The API server decodes the pod into its Go types before calling us, so this
    only trips on a hand-made review; it turns what would be a crash into a refusal.
    """
    problems: list[str] = []
    if not isinstance(pod, dict):
        raise PodError(["the object is not a pod"])
    meta, spec = pod.get("metadata"), pod.get("spec")
    for where, value, kind in (("metadata", meta, dict), ("spec", spec, dict)):
        if value is not None and not isinstance(value, kind):
            problems.append(f"{where}: expected a map")
    if isinstance(meta, dict):
        for key in _MAPS:
            if meta.get(key) is not None and not isinstance(meta[key], dict):
                problems.append(f"metadata.{key}: expected a map of strings")
        refs = meta.get("ownerReferences")
        if refs is not None and not (
            isinstance(refs, list) and all(isinstance(r, dict) for r in refs)
        ):
            problems.append("metadata.ownerReferences: expected a list of maps")
    if isinstance(spec, dict):
        for key in _LISTS:
            items = spec.get(key)
            if items is None:
                continue
            if not isinstance(items, list) or not all(
                isinstance(c, dict) and isinstance(c.get("name"), str) for c in items
            ):
                problems.append(f"spec.{key}: expected a list of maps, each with a name")
            elif key != "volumes" and not all(
                isinstance(c.get("env") or [], list) for c in items
            ):
                problems.append(f"spec.{key}[].env: expected a list")
        grace = spec.get("terminationGracePeriodSeconds")
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
            problems.append("spec.terminationGracePeriodSeconds: expected an integer")
    status = pod.get("status")
    if status is not None and not isinstance(status, dict):
        problems.append("status: expected a map")
    if problems:
        raise PodError(problems)


def _meta(pod: Pod) -> dict[str, Any]:
    meta: dict[str, Any] = pod.get("metadata") or {}
    return meta


def describe(pod: Pod, namespace: str) -> str:
    meta = _meta(pod)
    name = str(meta.get("name") or (str(meta.get("generateName", "")) + "*"))
    # Not yet validated by the API server: a name in a log line or message stays short.
    return f"{namespace[:63]}/{name[:253]}"


def skip_reason(pod: Pod, namespace: str, settings: Settings) -> str | None:
    """Why this pod must not get the sidecar, or None."""
    meta, spec = _meta(pod), pod.get("spec") or {}
    if namespace in settings.excluded_namespaces:
        return f"namespace {namespace} is excluded from injection"
    if (meta.get("labels") or {}).get(INJECT_LABEL) == "false":
        return f"label {INJECT_LABEL}=false"
    if spec.get("hostNetwork"):
        # Envoy's loopback listener would be the node's, shared by every such pod.
        return "hostNetwork pods share the node's network namespace"
    phase = (pod.get("status") or {}).get("phase")
    if phase not in (None, "Pending"):
        return f"the pod is {phase}; sidecars can only be added at creation"
    return None


def _owned_by_job(pod: Pod) -> bool:
    return any(ref.get("kind") == "Job" for ref in _meta(pod).get("ownerReferences") or [])


def strip(pod: Pod) -> Pod:
    """The pod without what an earlier injection added (per its status annotation)."""
    pod = copy.deepcopy(pod)
    meta = _meta(pod)
    raw = (meta.get("annotations") or {}).get(STATUS)
    spec = pod.setdefault("spec", {})
    if raw is None:
        taken = [
            c["name"]
            for key in ("initContainers", "containers")
            for c in spec.get(key) or []
            if c.get("name") in NAMES
        ]
        if taken:
            raise AnnotationError(
                [f"container name {show(taken[0])} is reserved for the sidegate sidecar; rename it"]
            )
        return pod
    status = _status(raw)
    env = status.get("env") or {}
    for key in ("initContainers", "containers"):
        if key in spec:
            spec[key] = [c for c in spec[key] if c.get("name") not in status.get(key, [])]
            if not spec[key] and key == "initContainers":
                del spec[key]
    if "volumes" in spec:
        spec["volumes"] = [
            v for v in spec["volumes"] if v.get("name") not in status.get("volumes", [])
        ]
        if not spec["volumes"]:
            del spec["volumes"]
    for c in spec.get("containers") or []:
        added = env.get(c.get("name"), [])
        if added and "env" in c:
            c["env"] = [e for e in c["env"] if e.get("name") not in added]
            if not c["env"]:
                del c["env"]
    for name in status.get("annotations", []):
        if name in SCRAPE_ANNOTATIONS:  # never another's, whatever the status says
            meta["annotations"].pop(name, None)
    del meta["annotations"][STATUS]
    if not meta["annotations"]:
        del meta["annotations"]
    return pod


def _status(raw: str) -> dict[str, Any]:
    """The status annotation, checked to be what sidegate writes (it is capped in length)."""
    bad = AnnotationError([f"annotation {STATUS}: not the JSON sidegate writes"])
    try:
        status = json.loads(raw)
    except (ValueError, RecursionError):
        raise bad from None

    def names(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(n, str) for n in value)

    if not isinstance(status, dict) or not all(
        names(status.get(k, []))
        for k in ("initContainers", "containers", "volumes", "annotations")
    ):
        raise bad
    env = status.get("env") or {}
    if not isinstance(env, dict) or not all(names(v) for v in env.values()):
        raise bad
    return status


def _add_env(container: dict[str, Any], opts: PodOptions, settings: Settings) -> list[str]:
    present = {e.get("name") for e in container.get("env") or []}
    added = []
    for name, value, alternatives in app_env(opts, settings):
        if name in present or any(a in present for a in alternatives):
            continue  # never override what the user set
        container.setdefault("env", []).append({"name": name, "value": value})
        added.append(name)
    return added


def _add_scrape_annotations(
    meta: dict[str, Any], settings: Settings, warnings: list[str]
) -> list[str]:
    """prometheus.io/* pointing at the probe port, unless the pod has its own."""
    wanted = scrape_annotations(settings)
    if not wanted:
        return []
    annotations = meta.setdefault("annotations", {})
    if SCRAPE in annotations:
        warnings.append(
            f"the pod's own {SCRAPE} annotations are kept; sidegate's metrics are on port "
            f"{settings.ready_port} at {settings.metrics_path} (scrape them with a PodMonitor)"
        )
        return []
    annotations.update(wanted)
    return sorted(wanted)


def inject(pod: Pod, namespace: str, settings: Settings) -> Result:
    """The desired pod, the JSON Patch to it, and warnings for the caller."""
    check_shape(pod)
    original = copy.deepcopy(pod)
    _meta(original).pop("managedFields", None)
    reason = skip_reason(original, namespace, settings)
    if reason:
        return Result(pod=original, skipped=reason)
    # Caps first: strip() below parses the status annotation.
    checked_annotations(_meta(original).get("annotations"))
    desired = strip(original)
    meta = desired.setdefault("metadata", {})
    opts = parse_options(meta.get("annotations") or {}, settings)
    spec = desired["spec"]
    apps = spec.get("containers") or []
    check_container_names(opts, [c.get("name", "") for c in apps])
    if not opts.native and _owned_by_job(desired):
        return Result(
            pod=original,
            skipped="a Job's pod with legacy sidecars would never complete; "
            "use native sidecars (Kubernetes 1.29+)",
        )
    # After strip(): what an earlier injection added is ours, everything left is the user's.
    check_isolation(spec, opts, settings)
    warnings: list[str] = []
    sidecars = [
        extproc_container(opts, settings, workload_name(desired, namespace)),
        proxy_container(opts, settings),
    ]
    capture = [capture_container(opts, settings)] if opts.capture == "iptables" else []
    user_inits = spec.get("initContainers") or []
    if opts.native:
        # First, so the user's own init containers can already reach providers.
        inits, containers = [*capture, *sidecars, *user_inits], [*apps]
    else:
        # Capture last among inits: earlier inits would have no proxy to reach.
        inits, containers = [*user_inits, *capture], [*sidecars, *apps]
    if inits:
        spec["initContainers"] = inits
    spec["containers"] = containers
    spec["volumes"] = [*(spec.get("volumes") or []), *volumes(opts, settings)]

    env_added: dict[str, list[str]] = {}
    if opts.capture != "none":
        for c in apps:
            if opts.containers is None or c.get("name") in opts.containers:
                added = _add_env(c, opts, settings)
                if added:
                    env_added[c["name"]] = added
    grace = spec.get("terminationGracePeriodSeconds", 30)
    if grace < opts.drain_seconds + 5:
        warnings.append(
            f"terminationGracePeriodSeconds={grace} leaves streams less than the "
            f"{opts.drain_seconds} s drain; raise it for long completions"
        )
    if any(c.get("envFrom") for c in apps):
        warnings.append(
            "sidegate's env entries take precedence over envFrom for "
            "OPENAI_BASE_URL and friends; set them in env to keep your own"
        )
    annotations_added = _add_scrape_annotations(meta, settings, warnings)
    status = {
        "version": __version__,
        "mode": "native" if opts.native else "legacy",
        "capture": opts.capture,
        "initContainers": [c["name"] for c in (capture + sidecars if opts.native else capture)],
        "containers": [] if opts.native else [c["name"] for c in sidecars],
        "volumes": list(VOLUMES),
        "env": env_added,
    }
    if annotations_added:
        status["annotations"] = annotations_added
    meta.setdefault("annotations", {})[STATUS] = json.dumps(
        status, sort_keys=True, separators=(",", ":")
    )
    patch = jsonpatch.make_patch(original, desired).patch
    return Result(pod=desired, patch=patch, warnings=warnings)

"""The pod settings that would let the app reach the sidecars' keys or sockets; refused.

The sidecars keep the provider keys and the two 0600 Unix sockets (Envoy's
admin API, the ext_proc) in volumes that only they mount, under a uid of their
own (``Settings.proxy_uid``). Containers in a pod share the network and IPC
namespaces, but each has its own mount namespace and, by default, its own PID
namespace: a container reaches another's files only through a volume it
mounts itself, or through ``/proc/<pid>/root`` of a process it can see. So
what is refused is exactly what opens one of those two paths, or leaves the
container altogether:

* a user volume or mount with one of the sidecars' volume names, and a mount
  or env reference of the provider-key Secret itself;
* the sidecars' uid in a user container: it owns the sockets and, where PIDs
  are shared, passes the kernel's ptrace check against the sidecars;
* ``privileged`` and capabilities that act beyond the container's own mounts
  and processes (``_ESCAPES``): with the node goes every Secret on it;
* with PIDs shared (``shareProcessNamespace`` or ``hostPID``), any container
  whose uid is not known, that holds root's capabilities (as root, or through a
  setuid binary), or that adds one to trace, signal or become the sidecars
  (``_PID_CAPS``): ``/proc/<pid>/root`` of a sidecar is its filesystem.

Not refused, because they reach nothing of the sidecars': running as root,
``DAC_OVERRIDE``/``FOWNER``/``CHOWN`` (they act on files the container can
see, and it sees none of ours; ``/proc/<pid>/root`` is gated by the ptrace
check, not by file permissions), ``SYS_PTRACE``/``KILL``/``SETUID`` without
shared PIDs (no sidecar process is visible), ``NET_ADMIN``/``NET_RAW`` (the
gateway's upstream connections verify the provider's certificate; the key
never crosses the loopback).

Every problem names the container and the field, and says how to fix it.
"""

from __future__ import annotations

from typing import Any

from .annotations import AnnotationError, PodOptions, show
from .settings import Settings
from .sidecar import CONFIG_VOLUME, KEYS_VOLUME, RUN_VOLUME

_HOLDS = {
    KEYS_VOLUME: "the provider keys, for the sidegate-extproc sidecar only",
    RUN_VOLUME: "the sidecars' admin and ext_proc sockets",
    CONFIG_VOLUME: "the sidecars' config",
}
# Capabilities that reach past the container's own mounts and processes.
_ESCAPES = {
    "ALL": "every capability, those below included",
    "SYS_ADMIN": "mount and namespace operations: the usual ways out of a container",
    "SYS_MODULE": "loads code into the kernel",
    "SYS_RAWIO": "raw access to memory and I/O ports",
    "DAC_READ_SEARCH": "opens any file of the node's filesystems by handle "
    "(open_by_handle_at), past the container's mounts",
    "BPF": "kernel programs that can read other processes' memory",
    "PERFMON": "kernel tracing that can read other processes' memory",
}
# With PIDs shared, these act on the sidecars' processes.
_PID_CAPS = {
    "SYS_PTRACE": "traces the sidecars and reads their memory and /proc/<pid>/root",
    "SETUID": "can take the sidecars' uid",
    "SETGID": "can take the sidecars' gid",
    "KILL": "can signal (stop) the sidecars",
}
_OPT_OUT = "or leave this pod out of injection (label sidegate.io/inject=false)"


class IsolationError(AnnotationError):
    """The pod would give its own containers a way to the sidecars' keys or sockets."""


def _map(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _uid(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _capability(name: object) -> str:
    # Kubernetes spells them without the prefix; runtimes accept either.
    text = str(name).upper()
    return text.removeprefix("CAP_")


def _key_secret_volumes(spec: dict[str, Any], secret: str) -> set[str]:
    """Names of the user's volumes that project the provider-key Secret."""
    out: set[str] = set()
    for v in _list(spec.get("volumes")):
        v = _map(v)
        sources = [_map(_map(s).get("secret")).get("name") for s in
                   _list(_map(v.get("projected")).get("sources"))]  # fmt: skip
        name = v.get("name")
        if isinstance(name, str) and (
            _map(v.get("secret")).get("secretName") == secret or secret in sources
        ):
            out.add(name)
    return out


def _containers(spec: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for key, label in (
        ("initContainers", "init container"),
        ("containers", "container"),
        # Not settable at creation, but a hand-made pod may carry them: same rules.
        ("ephemeralContainers", "ephemeral container"),
    ):
        for c in _list(spec.get(key)):
            c = _map(c)
            out.append((f"{label} {show(str(c.get('name', '')), 63)}", c))
    return out


def check_isolation(spec: dict[str, Any], opts: PodOptions, settings: Settings) -> None:
    """Refuse (IsolationError, every problem at once) a pod that breaks the sidecars' isolation.

    ``spec`` is the user's pod spec: whatever an earlier injection added is
    already stripped, so the sidecars' own volumes and mounts are not in it.
    """
    problems: list[str] = []
    uid = settings.proxy_uid
    for i, v in enumerate(_list(spec.get("volumes"))):
        name = _map(v).get("name")
        if isinstance(name, str) and name in _HOLDS:
            problems.append(
                f"spec.volumes[{i}]: the name {name!r} is reserved for the volume sidegate adds "
                f"({_HOLDS[name]}); rename your volume and its mounts"
            )
    key_volumes = _key_secret_volumes(spec, opts.secret_name)
    pod_sc = _map(spec.get("securityContext"))
    pod_uid = _uid(pod_sc.get("runAsUser"))
    shared = (
        "spec.shareProcessNamespace"
        if spec.get("shareProcessNamespace") is True
        else "spec.hostPID"
        if spec.get("hostPID") is True
        else None
    )
    for who, c in _containers(spec):
        for j, m in enumerate(_list(c.get("volumeMounts"))):
            name = _map(m).get("name")
            if not isinstance(name, str):
                continue  # only a hand-made pod; the API server refuses it
            if name in _HOLDS:
                problems.append(
                    f"{who}: volumeMounts[{j}] mounts {name!r} ({_HOLDS[name]}); remove the "
                    "mount: the app reaches providers through the sidecar at 127.0.0.1"
                )
            elif name in key_volumes:
                problems.append(
                    f"{who}: volumeMounts[{j}] mounts volume {show(str(name), 63)}, which holds "
                    f"Secret {opts.secret_name!r} (the provider keys sidegate keeps from the "
                    "app); remove the mount"
                )
        for j, e in enumerate(_list(c.get("env"))):
            ref = _map(_map(_map(e).get("valueFrom")).get("secretKeyRef"))
            if ref.get("name") == opts.secret_name:
                problems.append(
                    f"{who}: env[{j}] reads Secret {opts.secret_name!r} (the provider keys "
                    "sidegate keeps from the app); remove it"
                )
        for j, e in enumerate(_list(c.get("envFrom"))):
            if _map(_map(e).get("secretRef")).get("name") == opts.secret_name:
                problems.append(
                    f"{who}: envFrom[{j}] reads Secret {opts.secret_name!r} (the provider keys "
                    "sidegate keeps from the app); remove it"
                )
        sc = _map(c.get("securityContext"))
        own_uid = _uid(sc.get("runAsUser"))
        effective = own_uid if own_uid is not None else pod_uid
        if effective == uid:
            field = (
                "securityContext.runAsUser"
                if own_uid is not None
                else "spec.securityContext.runAsUser (inherited)"
            )
            problems.append(
                f"{who}: {field} is {uid}, the sidegate sidecars' uid, which owns their "
                "sockets; run it as another uid (or change the injector's proxyUID)"
            )
        if sc.get("privileged") is True:
            problems.append(
                f"{who}: securityContext.privileged is true: a privileged container controls "
                "the node, provider keys included; add only the capabilities it needs, "
                + _OPT_OUT
            )
        caps = {_capability(n) for n in _list(_map(sc.get("capabilities")).get("add"))}
        for cap in sorted(caps & _ESCAPES.keys()):
            problems.append(
                f"{who}: securityContext.capabilities.add has {cap} ({_ESCAPES[cap]}), which "
                f"reaches past the container to the sidecars' keys; remove it, {_OPT_OUT}"
            )
        if shared is None:
            continue
        # Root's default capabilities (SETUID, SETGID, KILL) are what reach the
        # sidecars; a non-root process has none unless a setuid binary makes it root.
        dropped_all = "ALL" in {
            _capability(n) for n in _list(_map(sc.get("capabilities")).get("drop"))
        }
        if effective is None:
            problems.append(
                f"{who}: {shared} is true and no runAsUser is set, so it may run as root or as "
                f"uid {uid} (the image decides), and reach the sidecars through /proc/<pid>/root;"
                f" set securityContext.runAsUser to a uid other than 0 and {uid}, or drop {shared}"
            )
        elif effective == 0 and not dropped_all:
            problems.append(
                f"{who}: {shared} is true and it runs as root with root's capabilities, which "
                "can take the sidecars' uid and reach them through /proc/<pid>/root; set "
                f"securityContext.capabilities.drop to [ALL], run it as a uid other than 0 and "
                f"{uid}, or drop {shared}"
            )
        elif sc.get("allowPrivilegeEscalation") is not False and not dropped_all:
            problems.append(
                f"{who}: {shared} is true and securityContext.allowPrivilegeEscalation is not "
                "false, so a setuid binary could make it root and reach the sidecars through "
                f"/proc/<pid>/root; set it to false (or capabilities.drop to [ALL]), "
                f"or drop {shared}"
            )
        for cap in sorted(caps & _PID_CAPS.keys()):
            problems.append(
                f"{who}: {shared} is true and securityContext.capabilities.add has {cap} "
                f"({_PID_CAPS[cap]}); remove it, or drop {shared}"
            )
    if problems:
        raise IsolationError(problems)

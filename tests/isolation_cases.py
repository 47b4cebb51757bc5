"""Pods that would give the app a way to the sidecars' keys or sockets, shared by
the injector's three entry points (``inject()``, the webhook, ``sidegate inject -f``).

Each case changes a pod spec whose only container is ``app`` and lists what the
refusal must say: the container, the field, and the way out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Spec = dict[str, Any]


def _app(spec: Spec) -> dict[str, Any]:
    app: dict[str, Any] = next(c for c in spec["containers"] if c["name"] == "app")
    return app


def _mount(spec: Spec, volume: str, path: str = "/mnt/x") -> None:
    _app(spec).setdefault("volumeMounts", []).append({"name": volume, "mountPath": path})


def _security(spec: Spec, **fields: Any) -> None:
    _app(spec).setdefault("securityContext", {}).update(fields)


def _init(spec: Spec, volume: str) -> None:
    spec.setdefault("initContainers", []).append(
        {"name": "setup", "image": "registry.example.com/setup:1",
         "volumeMounts": [{"name": volume, "mountPath": "/run/sidegate"}]}
    )  # fmt: skip


def _own_volume(spec: Spec, name: str, source: dict[str, Any]) -> None:
    spec.setdefault("volumes", []).append({"name": name, **source})


def _locked_down(spec: Spec) -> None:
    """What a shared PID namespace needs, so each case below breaks one thing only."""
    spec.setdefault("securityContext", {})["runAsUser"] = 1000
    _security(spec, allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]})


def _shared(spec: Spec, **fields: Any) -> None:
    spec["shareProcessNamespace"] = True
    _locked_down(spec)
    _security(spec, **fields)


REFUSALS: list[tuple[str, Callable[[Spec], None], tuple[str, ...]]] = [
    (
        "app_mounts_the_keys_volume",
        lambda s: _mount(s, "sidegate-keys"),
        ("container 'app': volumeMounts[", "mounts 'sidegate-keys' (the provider keys",
         "remove the mount"),
    ),
    (
        "init_container_mounts_the_run_volume",
        lambda s: _init(s, "sidegate-run"),
        ("init container 'setup': volumeMounts[0] mounts 'sidegate-run' (the sidecars' "
         "admin and ext_proc sockets); remove the mount",),
    ),
    (
        "pod_declares_a_volume_with_our_name",
        lambda s: (_own_volume(s, "sidegate-run", {"emptyDir": {}}), _mount(s, "sidegate-run")),
        ("the name 'sidegate-run' is reserved for the volume sidegate adds",
         "rename your volume and its mounts", "container 'app': volumeMounts["),
    ),
    (
        "app_mounts_the_key_secret_under_its_own_name",
        lambda s: (
            _own_volume(s, "creds", {"projected": {"sources": [
                {"secret": {"name": "sidegate-provider-keys"}}]}}),
            _mount(s, "creds"),
        ),
        ("container 'app': volumeMounts[", "mounts volume 'creds', which holds Secret "
         "'sidegate-provider-keys'",),
    ),
    (
        "app_reads_the_key_secret_into_env",
        lambda s: _app(s).update(
            envFrom=[{"secretRef": {"name": "sidegate-provider-keys"}}],
            env=[{"name": "K", "valueFrom": {"secretKeyRef": {
                "name": "sidegate-provider-keys", "key": "openai"}}}],
        ),
        ("container 'app': envFrom[0] reads Secret 'sidegate-provider-keys'",
         "container 'app': env[0] reads Secret 'sidegate-provider-keys'"),
    ),
    (
        "app_runs_as_the_sidecar_uid",
        lambda s: _security(s, runAsUser=1337),
        ("container 'app': securityContext.runAsUser is 1337, the sidegate sidecars' uid",
         "run it as another uid (or change the injector's proxyUID)"),
    ),
    (
        "pod_runs_as_the_sidecar_uid",
        lambda s: s.setdefault("securityContext", {}).update(runAsUser=1337),
        ("container 'app': spec.securityContext.runAsUser (inherited) is 1337",),
    ),
    (
        "app_is_privileged",
        lambda s: _security(s, privileged=True),
        ("container 'app': securityContext.privileged is true",
         "label sidegate.io/inject=false"),
    ),
    (
        "app_adds_capabilities_that_leave_the_container",
        lambda s: _security(s, capabilities={"add": ["CAP_SYS_ADMIN", "DAC_READ_SEARCH"]}),
        ("container 'app': securityContext.capabilities.add has DAC_READ_SEARCH",
         "container 'app': securityContext.capabilities.add has SYS_ADMIN"),
    ),
    (
        "shared_pids_with_an_app_that_may_be_root",
        lambda s: s.update(shareProcessNamespace=True),
        ("container 'app': spec.shareProcessNamespace is true and no runAsUser is set",
         "may run as root or as uid 1337 (the image decides)"),
    ),
    (
        "shared_pids_with_an_app_that_can_trace",
        lambda s: _shared(s, capabilities={"drop": ["ALL"], "add": ["SYS_PTRACE"]}),
        ("container 'app': spec.shareProcessNamespace is true and "
         "securityContext.capabilities.add has SYS_PTRACE",),
    ),
    (
        "host_pids_with_a_root_app",
        lambda s: _shared(s, runAsUser=0, capabilities={"drop": ["NET_RAW"]})
        or s.update(shareProcessNamespace=False, hostPID=True),
        ("container 'app': spec.hostPID is true and it runs as root with root's capabilities",
         "set securityContext.capabilities.drop to [ALL]"),
    ),
    (
        "shared_pids_with_an_app_that_may_escalate",
        lambda s: _shared(s, allowPrivilegeEscalation=True, capabilities={}),
        ("container 'app': spec.shareProcessNamespace is true and "
         "securityContext.allowPrivilegeEscalation is not false",),
    ),
]  # fmt: skip

REFUSAL_PARAMS = [pytest.param(mutate, says, id=name) for name, mutate, says in REFUSALS]

# Close to a refusal, but nothing in them reaches the sidecars: accepted.
ACCEPTED: list[tuple[str, Callable[[Spec], None]]] = [
    ("shared_pids_locked_down", lambda s: _shared(s)),
    (
        "shared_pids_root_without_capabilities",
        lambda s: _shared(s, runAsUser=0, allowPrivilegeEscalation=None,
                          capabilities={"drop": ["all"], "add": ["NET_BIND_SERVICE"]}),
    ),
    (
        "shared_pids_non_root_without_escalation",
        lambda s: _shared(s, capabilities={"add": ["CHOWN"]}),
    ),
    (
        "root_app_with_dac_override_ptrace_and_kill",
        lambda s: _security(s, runAsUser=0, capabilities={"add": ["DAC_OVERRIDE", "SYS_PTRACE",
                                                                   "KILL", "NET_ADMIN"]}),
    ),
    (
        "pod_uid_1337_overridden_by_the_container",
        lambda s: (s.setdefault("securityContext", {}).update(runAsUser=1337),
                   _security(s, runAsUser=1000)),
    ),
    (
        "app_mounts_another_secret",
        lambda s: (_own_volume(s, "tls", {"secret": {"secretName": "app-tls"}}), _mount(s, "tls")),
    ),
]  # fmt: skip

ACCEPTED_PARAMS = [pytest.param(mutate, id=name) for name, mutate in ACCEPTED]

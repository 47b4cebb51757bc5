"""The containers and volumes sidegate adds to a pod.

The run volume holds the ext_proc's socket and Envoy's admin socket (both mode
0600, uid ``proxy_uid``) and Envoy's config: only the two sidecars mount it,
never the app, which can reach the app listener and ``/ready`` only.

Two sidecars: ``sidegate-extproc`` (this package's image: the ext_proc service,
which also writes Envoy's config files into the shared run dir) and
``sidegate-proxy`` (the official Envoy image, started from those files). The
order is ext_proc then Envoy: Envoy needs the files at start, and on shutdown
the kubelet stops native sidecars in reverse, so Envoy drains first.
"""

from __future__ import annotations

from typing import Any

from ..quota.caller import WORKLOAD_ENV
from .annotations import PodOptions
from .settings import Settings

EXTPROC = "sidegate-extproc"
PROXY = "sidegate-proxy"
CAPTURE = "sidegate-capture"
NAMES = (EXTPROC, PROXY, CAPTURE)
RUN_VOLUME = "sidegate-run"
CONFIG_VOLUME = "sidegate-config"
KEYS_VOLUME = "sidegate-keys"
VOLUMES = (RUN_VOLUME, CONFIG_VOLUME, KEYS_VOLUME)
RUN_DIR = "/run/sidegate"
ENVOY_DIR = f"{RUN_DIR}/envoy"
SOCKET = f"{RUN_DIR}/extproc.sock"
ADMIN_SOCKET = f"{RUN_DIR}/envoy-admin.sock"
# Legacy sidecars: Envoy's preStop creates it, the ext_proc then drains Envoy
# through the admin socket (the Envoy image has no client for a Unix socket).
DRAIN_FILE = f"{RUN_DIR}/drain-request"
CONFIG_DIR = "/etc/sidegate"
KEYS_DIR = "/var/run/secrets/sidegate/keys"
READY_PORT_NAME = "sidegate-ready"


def _restricted(uid: int) -> dict[str, Any]:
    """What Pod Security "restricted" asks of a container."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsGroup": uid,
        "runAsNonRoot": True,
        "runAsUser": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


# Fields the API server defaults. Spelling them out keeps re-injection of an
# admitted (defaulted) pod an empty patch, as with webhook reinvocation.
_CONTAINER_DEFAULTS = {
    "terminationMessagePath": "/dev/termination-log",
    "terminationMessagePolicy": "File",
}


def _probe(action: dict[str, Any], *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        **action,
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "successThreshold": 1,
        "failureThreshold": failures,
    }


def _ready_get(port: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/ready", "port": port, "scheme": "HTTP"}}


def _health_command(wait: int | None = None) -> list[str]:
    cmd = ["sidegate", "health", "--socket", SOCKET, "--envoy-dir", ENVOY_DIR]
    return [*cmd, "--wait", str(wait)] if wait else cmd


def _http_check(port: int, path: str) -> str:
    """An HTTP status check in bash alone: the Envoy image has no curl or wget.

    HTTP/1.1, because Envoy answers HTTP/1.0 with 426 unless told to accept it.
    """
    crlf = "\\r\\n"
    request = f"GET {path} HTTP/1.1{crlf}Host: localhost{crlf}Connection: close{crlf}{crlf}"
    return (
        f"exec 3<>/dev/tcp/127.0.0.1/{port} && "
        f"printf '{request}' >&3 && "
        f'read -r _ code _ <&3 && [ "$code" = 200 ]'
    )


def extproc_container(opts: PodOptions, s: Settings, workload: str) -> dict[str, Any]:
    args = [
        "extproc",
        "--config",
        f"{CONFIG_DIR}/{s.config_key}",
        "--socket",
        SOCKET,
        "--envoy-dir",
        ENVOY_DIR,
        "--admin-socket",
        ADMIN_SOCKET,
        "--ready-port",
        str(s.ready_port),
    ]
    container: dict[str, Any] = {
        "name": EXTPROC,
        "image": opts.image,
        "imagePullPolicy": s.image_pull_policy,
        "args": args,
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            # The `workload` dimension of quotas (quota.caller).
            {"name": WORKLOAD_ENV, "value": workload},
        ],
        "resources": opts.extproc_resources.to_k8s(),
        "securityContext": _restricted(s.proxy_uid),
        **_CONTAINER_DEFAULTS,
        "volumeMounts": [
            {"name": RUN_VOLUME, "mountPath": RUN_DIR},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            # Keys reach this container only: it injects them; Envoy and the app never see them.
            {"name": KEYS_VOLUME, "mountPath": KEYS_DIR, "readOnly": True},
        ],
    }
    if opts.native:
        container["restartPolicy"] = "Always"
        container["startupProbe"] = _probe(
            {"exec": {"command": _health_command()}}, period=1, timeout=5, failures=120
        )
    else:
        # Legacy sidecars all get SIGTERM at once: keep serving while Envoy drains.
        args += ["--drain-seconds", str(opts.drain_seconds), "--drain-file", DRAIN_FILE]
        # A blocking postStart holds the next container (Envoy) until this serves.
        container["lifecycle"] = {"postStart": {"exec": {"command": _health_command(wait=120)}}}
    container["livenessProbe"] = _probe(
        {"exec": {"command": _health_command()}}, period=10, timeout=5, failures=3
    )
    return container


def proxy_container(opts: PodOptions, s: Settings) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": PROXY,
        "image": opts.proxy_image,
        "imagePullPolicy": s.image_pull_policy,
        "command": ["envoy"],
        "args": [
            "-c",
            f"{ENVOY_DIR}/envoy.yaml",
            "--disable-hot-restart",
            "--concurrency",
            str(s.concurrency),
            "--drain-time-s",
            str(opts.drain_seconds),
            "--drain-strategy",
            "immediate",
            "--log-level",
            "warning",
        ],
        "ports": [{"name": READY_PORT_NAME, "containerPort": s.ready_port, "protocol": "TCP"}],
        "readinessProbe": _probe(_ready_get(s.ready_port), period=5, timeout=1, failures=3),
        "resources": opts.proxy_resources.to_k8s(),
        "securityContext": _restricted(s.proxy_uid),
        **_CONTAINER_DEFAULTS,
        "volumeMounts": [{"name": RUN_VOLUME, "mountPath": RUN_DIR}],
    }
    if opts.native:
        container["restartPolicy"] = "Always"
        container["startupProbe"] = _probe(
            _ready_get(s.ready_port), period=1, timeout=1, failures=120
        )
    else:
        wait_ready = (
            f"for i in $(seq 1200); do ({_http_check(s.ready_port, '/ready')}) 2>/dev/null "
            "&& exit 0; sleep 0.1; done; exit 1"
        )
        drain = f": > {DRAIN_FILE}; sleep {opts.drain_seconds}"
        container["lifecycle"] = {
            # Holds the app containers until Envoy is ready (they start after this returns).
            "postStart": {"exec": {"command": ["bash", "-c", wait_ready]}},
            # Stop taking new connections, let streams finish, then exit on SIGTERM.
            "preStop": {"exec": {"command": ["bash", "-c", drain]}},
        }
    return container


def capture_container(opts: PodOptions, s: Settings) -> dict[str, Any]:
    """Root with NET_ADMIN, once, to install the REDIRECT rules; nothing stays privileged."""
    return {
        "name": CAPTURE,
        "image": opts.image,
        "imagePullPolicy": s.image_pull_policy,
        "args": [
            "capture",
            "install",
            "--proxy-uid",
            str(s.proxy_uid),
            "--to-port",
            str(s.listen_port),
            "--ports",
            ",".join(str(p) for p in opts.capture_ports),
        ],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": False,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "runAsUser": 0,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        **_CONTAINER_DEFAULTS,
    }


def volumes(opts: PodOptions, s: Settings) -> list[dict[str, Any]]:
    return [
        {"name": RUN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {
            "name": CONFIG_VOLUME,
            "configMap": {
                "name": opts.config_map,
                "items": [{"key": s.config_key, "path": s.config_key}],
                "defaultMode": 0o644,
            },
        },
        # Mounted whole (never subPath): the kubelet swaps ..data on rotation.
        # World-readable on purpose: the kubelet makes the files root:root (root:fsGroup
        # with a pod fsGroup), so 0440 would shut out the ext_proc's own uid. What keeps
        # the keys from the app is that no other container mounts this volume, which the
        # injector enforces (isolation.py), not the mode.
        {"name": KEYS_VOLUME, "secret": {"secretName": opts.secret_name, "defaultMode": 0o444}},
    ]


def app_env(opts: PodOptions, s: Settings) -> list[tuple[str, str, tuple[str, ...]]]:
    """(variable, value, variables that make it unnecessary) for the app containers.

    The base URLs point the official SDKs at the sidecar. The placeholder keys
    exist only because each SDK refuses to run without some key; the sidecar
    replaces them with the real one, so a user's own key is left alone.
    """
    base = f"http://127.0.0.1:{s.listen_port}"
    out: list[tuple[str, str, tuple[str, ...]]] = []
    if "openai" in opts.providers:
        out += [
            ("OPENAI_BASE_URL", f"{base}/v1", ()),
            ("OPENAI_API_KEY", "sidegate-injects-the-key", ()),
        ]
    if "anthropic" in opts.providers:
        out += [
            ("ANTHROPIC_BASE_URL", f"{base}/anthropic", ()),
            ("ANTHROPIC_API_KEY", "sidegate-injects-the-key", ("ANTHROPIC_AUTH_TOKEN",)),
            # Claude Code's own calls to its vendor (telemetry, error reports,
            # update checks) would leave the pod beside the sidecar. Only where
            # the container's Anthropic traffic comes to the sidecar.
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1", ("ANTHROPIC_BASE_URL",)),
        ]
    if "gemini" in opts.providers:
        out += [
            ("GOOGLE_GEMINI_BASE_URL", f"{base}/gemini", ()),
            ("GEMINI_API_KEY", "sidegate-injects-the-key", ("GOOGLE_API_KEY",)),
        ]
    return out

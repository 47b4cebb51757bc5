"""``sidegate health``: is this pod's ext_proc serving? (the ext_proc container's probes)

Kubelet gRPC probes need a TCP port and the ext_proc listens on a Unix socket,
so the probe is an exec of this check: the grpc.health.v1 ``Check`` call Envoy
makes too (health_service), and, when Envoy's files are expected, all of them.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from .envoy.files import BOOTSTRAP, RESOURCES
from .stages.health_service import CHECK, SERVING


def problem(socket: str, envoy_dir: str | None, timeout: float) -> str | None:
    """None when healthy, else what is wrong."""
    if envoy_dir:
        names = (BOOTSTRAP, *RESOURCES)
        missing = [n for n in names if not (Path(envoy_dir) / n).is_file()]
        if missing:
            return f"Envoy config not written yet in {envoy_dir}: {', '.join(missing)}"
    if not Path(socket).exists():
        return f"no ext_proc socket at {socket}"
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        check = channel.unary_unary(CHECK)
        try:
            answer = check(b"", timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"ext_proc at {socket} did not answer a health check within {timeout:g} s"
            return f"ext_proc at {socket} failed its health check: {code}"
    if answer != SERVING:
        return f"ext_proc at {socket} is not serving"
    return None


def wait(socket: str, envoy_dir: str | None, timeout: float, wait_seconds: float) -> str | None:
    """Poll until healthy or ``wait_seconds`` pass (legacy sidecars' blocking postStart)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        found = problem(socket, envoy_dir, timeout)
        if found is None or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)

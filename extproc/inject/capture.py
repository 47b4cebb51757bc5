"""``sidegate capture install``: the transparent-capture init container's job.

nat OUTPUT rules send the pod's plain-HTTP egress on the given ports to the
sidecar's app listener on loopback (REDIRECT of a locally generated packet
lands on 127.0.0.1). Envoy's own traffic (the proxy UID) and loopback are left
alone, so the proxy's upstream calls are never captured back into itself.
HTTPS is not captured: its bodies are unreadable without a CA the app trusts.
"""

from __future__ import annotations

import shutil
import subprocess

CHAIN = "SIDEGATE_OUTPUT"


class CaptureError(RuntimeError):
    pass


def rules(proxy_uid: int, to_port: int, ports: tuple[int, ...], *, ipv6: bool = False) -> str:
    """The rules in iptables-restore format (applied with --noflush)."""
    loopback = "::1/128" if ipv6 else "127.0.0.0/8"
    lines = [
        "*nat",
        f":{CHAIN} - [0:0]",
        f"-A {CHAIN} -m owner --uid-owner {proxy_uid} -j RETURN",
        f"-A {CHAIN} -d {loopback} -j RETURN",
        *(f"-A {CHAIN} -p tcp --dport {p} -j REDIRECT --to-ports {to_port}" for p in ports),
        "COMMIT",
        "",
    ]
    return "\n".join(lines)


def _run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)


def install(proxy_uid: int, to_port: int, ports: tuple[int, ...]) -> list[str]:
    """Install (or re-install: a restarted init container) the rules. Returns what was done."""
    done = []
    for family, binary in (("IPv4", "iptables"), ("IPv6", "ip6tables")):
        restore = shutil.which(f"{binary}-restore")
        if restore is None:
            if family == "IPv4":
                raise CaptureError(f"{binary}-restore is not installed in this image")
            continue
        # Declaring the chain flushes it, so a re-run replaces its rules.
        result = _run(
            [restore, "--noflush"], rules(proxy_uid, to_port, ports, ipv6=family == "IPv6")
        )
        if result.returncode != 0:
            if family == "IPv6":  # a pod without IPv6 is fine
                continue
            raise CaptureError(f"{binary}-restore failed: {result.stderr.strip()}")
        jump = ["-t", "nat", "OUTPUT", "-p", "tcp", "-j", CHAIN]
        if _run([binary, "-t", "nat", "-C", *jump[2:]]).returncode != 0:
            result = _run([binary, "-t", "nat", "-A", *jump[2:]])
            if result.returncode != 0:
                raise CaptureError(f"{binary} could not hook {CHAIN}: {result.stderr.strip()}")
        done.append(
            f"{family}: tcp ports {','.join(map(str, ports))} -> 127.0.0.1:{to_port}, "
            f"uid {proxy_uid} exempt"
        )
    return done

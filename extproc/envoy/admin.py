"""Envoy's admin API over its Unix socket: readiness, config versions, drain.

The admin interface listens on a Unix socket of mode 0600 (never on TCP), so
only the sidecar's own uid reaches it: the app shares the pod's loopback, and
on a TCP port it could raise the log level until headers (provider keys) are
logged, or stop the gateway with ``/quitquitquit``.

The listener and cluster files carry the config's version in ``version_info``;
Envoy reports the version it applied as the ``lds``/``cds`` ``version_text``
readouts and counts refusals in ``update_rejected``.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import socket
import time
import urllib.parse
from pathlib import Path

_FILTER = (
    r"^(listener_manager\.lds|cluster_manager\.cds|http\.sidegate\.rds\.sidegate)"
    r"\.(version_text|update_rejected)$"
)
# Stat prefix -> what it is, for the refusal message. RDS stats are named
# http.<HCM stat_prefix>.rds.<route config name>.
_KEYS = {
    "cluster_manager.cds": "clusters",
    "http.sidegate.rds.sidegate": "routes",
    "listener_manager.lds": "listeners",
}

log = logging.getLogger(__name__)


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def request(path: str, method: str, target: str, timeout: float = 1.0) -> tuple[int, str] | None:
    """(status, body) of one admin request, or None when Envoy does not answer."""
    conn = UnixConnection(path, timeout)
    try:
        conn.request(method, target)
        resp = conn.getresponse()
        return resp.status, resp.read(1 << 20).decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _read_stats(path: str, pattern: str = _FILTER) -> dict[str, str] | None:
    answer = request(path, "GET", f"/stats?filter={urllib.parse.quote(pattern)}")
    if answer is None or answer[0] != 200:
        return None
    stats = {}
    for line in answer[1].splitlines():
        name, _, value = line.partition(": ")
        stats[name] = value.strip().strip('"')
    return stats


class EnvoyAdmin:
    def __init__(self, socket_path: str | Path) -> None:
        self.path = str(socket_path)

    async def stats(self, pattern: str = _FILTER) -> dict[str, str] | None:
        return await asyncio.to_thread(_read_stats, self.path, pattern)

    async def ready(self) -> bool:
        answer = await asyncio.to_thread(request, self.path, "GET", "/ready")
        return answer is not None and answer[0] == 200

    async def listeners(self) -> set[str] | None:
        """Names of the listeners Envoy has bound (a listener that failed to bind is absent)."""
        answer = await asyncio.to_thread(request, self.path, "GET", "/listeners?format=json")
        if answer is None or answer[0] != 200:
            return None
        try:
            statuses = json.loads(answer[1]).get("listener_statuses") or []
        except ValueError:
            return None
        return {str(s.get("name")) for s in statuses if isinstance(s, dict)}

    async def drain_listeners(self) -> bool:
        """Stop accepting connections and let open streams finish; Envoy keeps running."""
        answer = await asyncio.to_thread(
            request, self.path, "POST", "/drain_listeners?graceful&skip_exit"
        )
        return answer is not None and answer[0] == 200

    async def wait_applied(
        self,
        version: str,
        before: dict[str, str] | None,
        within: float = 10.0,
        kinds: tuple[str, ...] = ("clusters", "routes", "listeners"),
    ) -> str | None:
        """None once Envoy runs ``version``; a reason if it rejected it.

        An Envoy with no admin socket (not started yet, or gone) loads the
        files when it starts, so that is not a refusal. One whose admin is
        slow to answer (a busy box) is still running the old routes: the
        ext_proc must not switch to the new plans before Envoy does, so keep
        asking until ``within`` runs out.
        """
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stats = await self.stats()
            if stats is None:
                if not await asyncio.to_thread(os.path.exists, self.path):
                    return None
                await asyncio.sleep(0.05)
                continue
            keys = {k: kind for k, kind in _KEYS.items() if kind in kinds}
            if all(stats.get(f"{k}.version_text") == version for k in keys):
                return None
            if before is not None:
                for k, kind in keys.items():
                    counter = f"{k}.update_rejected"
                    if int(stats.get(counter, "0")) > int(before.get(counter, "0")):
                        return f"Envoy rejected the generated {kind} (see the Envoy log)"
            await asyncio.sleep(0.05)
        log.warning(
            "Envoy did not confirm config version %s within %g s; applying it anyway",
            version,
            within,
        )
        return None

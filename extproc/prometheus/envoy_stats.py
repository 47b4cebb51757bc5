"""Envoy's own stats in Prometheus text, read from its admin socket.

Only ``/stats/prometheus`` is ever asked for: the scrape endpoint never
forwards a request to the admin API, so nothing else there (log levels,
``/quitquitquit``, config dumps) is reachable from the probe port. Stat names
are built from config names (listeners, clusters named for providers, routes)
and response codes, never from header values, so no key or user id is in them.
"""

from __future__ import annotations

import asyncio
import http.client
import time

from ..envoy.admin import UnixConnection

# A sidecar's Envoy has a few clusters: its full text is ~100-300 KiB. A cap
# far above that bounds what one scrape holds in memory.
MAX_BYTES = 8 << 20
TIMEOUT = 2.0


class EnvoyStatsError(Exception):
    """Envoy's admin API did not give its stats (not running, too slow, too large)."""


def _target(used_only: bool) -> str:
    return "/stats/prometheus?usedonly" if used_only else "/stats/prometheus"


def _fetch(path: str, used_only: bool, timeout: float, max_bytes: int) -> bytes:
    deadline = time.monotonic() + timeout
    conn = UnixConnection(path, timeout)
    try:
        conn.request("GET", _target(used_only))
        resp = conn.getresponse()
        if resp.status != 200:
            raise EnvoyStatsError(f"Envoy's admin API answered {resp.status}")
        chunks: list[bytes] = []
        size = 0
        while chunk := resp.read1(1 << 16):
            size += len(chunk)
            if size > max_bytes:
                raise EnvoyStatsError(f"Envoy's stats exceed {max_bytes} bytes")
            if time.monotonic() > deadline:
                raise EnvoyStatsError(f"Envoy's stats took over {timeout:g} s")
            chunks.append(chunk)
        return b"".join(chunks)
    except (OSError, http.client.HTTPException) as e:
        raise EnvoyStatsError(f"Envoy's admin API did not answer ({type(e).__name__})") from None
    finally:
        conn.close()


async def fetch(
    admin_socket: str,
    *,
    used_only: bool = False,
    within: float = TIMEOUT,
    max_bytes: int = MAX_BYTES,
) -> bytes:
    """Envoy's stats text; EnvoyStatsError when it cannot be had within the bounds."""
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(_fetch, admin_socket, used_only, within, max_bytes),
            # The socket timeout bounds each read; this bounds the whole.
            within + 0.5,
        )
    except TimeoutError:
        raise EnvoyStatsError(f"Envoy's stats took over {within:g} s") from None

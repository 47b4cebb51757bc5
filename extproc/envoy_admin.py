"""Read Envoy's admin stats to learn whether it took a new config.

The listener and cluster files carry the config's version in ``version_info``;
Envoy reports the version it applied as the ``lds``/``cds`` ``version_text``
readouts and counts refusals in ``update_rejected``. Admin is loopback-only.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable

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


def _read_stats(url: str) -> dict[str, str] | None:
    try:
        with urllib.request.urlopen(f"{url}/stats?filter={_FILTER}", timeout=1) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        stats[name] = value.strip().strip('"')
    return stats


class EnvoyAdmin:
    def __init__(self, url: Callable[[], str | None]) -> None:
        self._url = url

    async def stats(self) -> dict[str, str] | None:
        url = self._url()
        return await asyncio.to_thread(_read_stats, url) if url else None

    async def wait_applied(
        self, version: str, before: dict[str, str] | None, within: float = 10.0
    ) -> str | None:
        """None once Envoy runs ``version``; a reason if it rejected it.

        An Envoy that cannot be reached (restarting, not started yet) loads the
        files when it starts, so that is not a refusal.
        """
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stats = await self.stats()
            if stats is None:
                return None
            if all(stats.get(f"{k}.version_text") == version for k in _KEYS):
                return None
            if before is not None:
                for k, kind in _KEYS.items():
                    counter = f"{k}.update_rejected"
                    if int(stats.get(counter, "0")) > int(before.get(counter, "0")):
                        return f"Envoy rejected the generated {kind} (see the Envoy log)"
            await asyncio.sleep(0.05)
        return None

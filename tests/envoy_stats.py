"""Envoy's counters and gauges, read from the admin interface of a test gateway."""

from __future__ import annotations

import re
import urllib.parse
import urllib.request

from tests.harness import GatewayProcess


def envoy_stats(gw: GatewayProcess, pattern: str) -> dict[str, int]:
    """Counters and gauges whose names match the regex ``pattern``."""
    admin = (gw.workdir / "admin").read_text().strip()
    query = urllib.parse.urlencode({"filter": pattern})
    with urllib.request.urlopen(f"http://{admin}/stats?{query}", timeout=5) as r:
        text = r.read().decode()
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(": ")
        if sep and re.fullmatch(r"\d+", value.strip()):
            stats[name] = int(value)
    return stats

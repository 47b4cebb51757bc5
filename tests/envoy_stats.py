"""Envoy's counters and gauges, read from the admin interface of a test gateway."""

from __future__ import annotations

import re
import urllib.parse

from extproc.envoy.admin import request as admin_request
from tests.harness import GatewayProcess


def envoy_stats(gw: GatewayProcess, pattern: str) -> dict[str, int]:
    """Counters and gauges whose names match the regex ``pattern``."""
    query = urllib.parse.urlencode({"filter": pattern})
    answer = admin_request(gw.admin_socket, "GET", f"/stats?{query}", timeout=5)
    assert answer is not None and answer[0] == 200, f"Envoy's admin did not answer /stats: {answer}"
    stats: dict[str, int] = {}
    for line in answer[1].splitlines():
        name, sep, value = line.partition(": ")
        if sep and re.fullmatch(r"\d+", value.strip()):
            stats[name] = int(value)
    return stats

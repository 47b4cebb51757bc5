"""``telemetry.prometheus``: what the probe port's scrape endpoint serves.

Imports nothing from Envoy or gRPC, like the rest of the config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Reader

ENVOY_STATS = ("all", "used", "none")
# The probe listener answers /ready itself; the scrape path must differ.
RESERVED_PATHS = ("/ready",)
_PATH = re.compile(r"^/[A-Za-z0-9._~/-]{0,127}$")
FIELDS = ("enabled", "path", "envoy_stats", "max_series_per_metric")


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    # Serve Prometheus text on the probe port (the sidecar's readyPort).
    enabled: bool = True
    path: str = "/metrics"
    # Envoy's own stats after sidegate's: every stat, only those Envoy has
    # written to (``usedonly``: much shorter), or none.
    envoy_stats: str = "all"
    # Series one sidegate metric may export; past it the OpenTelemetry SDK
    # folds new label sets into one series marked otel_metric_overflow="true".
    max_series_per_metric: int = 2000


def parse_prometheus(r: Reader) -> PrometheusConfig:
    r.mapping(FIELDS, optional=True)
    d = PrometheusConfig()
    path_r = r.child("path")
    path = path_r.string(d.path)
    if not _PATH.fullmatch(path):
        raise path_r.fail(
            "expected an absolute URL path of letters, digits and ._~/- (at most 128 characters)"
        )
    if path in RESERVED_PATHS:
        raise path_r.fail(f"{path} is the readiness probe's path; choose another")
    stats_r = r.child("envoy_stats")
    envoy_stats = stats_r.string(d.envoy_stats)
    if envoy_stats not in ENVOY_STATS:
        raise stats_r.fail(f"expected one of: {', '.join(ENVOY_STATS)}")
    return PrometheusConfig(
        enabled=r.child("enabled").boolean(d.enabled),
        path=path,
        envoy_stats=envoy_stats,
        max_series_per_metric=r.child("max_series_per_metric").integer(
            d.max_series_per_metric, minimum=1, maximum=100_000
        ),
    )

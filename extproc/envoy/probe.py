"""The probe listener: ``/ready`` for the kubelet and the Prometheus scrape path.

It listens on the pod's address (a probe comes from the kubelet, a scrape from
Prometheus), so it serves exactly these two paths and 404 for the rest; Envoy's
admin API is never behind it. ``/ready`` is Envoy's health check filter;
the scrape path goes to the ext_proc's metrics socket (``prometheus/endpoint.py``).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from ..prometheus.config import PrometheusConfig
from .bootstrap import EXTPROC_CLUSTER

METRICS_CLUSTER = "sidegate_metrics"
METRICS_SOCKET = "metrics.sock"
# Rendering plus Envoy's admin (bounded at 2 s in envoy_stats.py) fit well inside.
SCRAPE_TIMEOUT = "10s"
_T = "@type"
_API = "type.googleapis.com/envoy"


def metrics_socket_beside(extproc_socket: str) -> str:
    return str(PurePath(extproc_socket).parent / METRICS_SOCKET)


def metrics_cluster(socket_path: str) -> dict[str, Any]:
    return {
        "name": METRICS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": METRICS_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}
            ],
        },
    }


def _metrics_route(path: str) -> dict[str, Any]:
    return {
        "name": "metrics",
        "match": {
            "path": path,
            "headers": [{"name": ":method", "string_match": {"exact": "GET"}}],
        },
        "route": {"cluster": METRICS_CLUSTER, "timeout": SCRAPE_TIMEOUT},
    }


def probe_listener(
    port: int, metrics: PrometheusConfig | None = None, address: str = "0.0.0.0"
) -> dict[str, Any]:
    """``/ready``: 200 while the ext_proc passes Envoy's health check, else 503.

    Answered by Envoy's health check filter from the ext_proc cluster's health
    (not from the admin API, which says 200 while every request fails). The
    listener opens only once Envoy has started, after the first check. With
    ``metrics`` enabled, ``GET <metrics.path>`` is the scrape endpoint.
    """
    health = {
        _T: f"{_API}.extensions.filters.http.health_check.v3.HealthCheck",
        "pass_through_mode": False,
        "headers": [{"name": ":path", "string_match": {"exact": "/ready"}}],
        "cluster_min_healthy_percentages": {EXTPROC_CLUSTER: {"value": 100}},
    }
    routes: list[dict[str, Any]] = []
    if metrics is not None and metrics.enabled:
        routes.append(_metrics_route(metrics.path))
    routes.append({"match": {"prefix": "/"}, "direct_response": {"status": 404}})
    hcm = {
        _T: f"{_API}.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ready",
        "route_config": {"virtual_hosts": [{"name": "ready", "domains": ["*"], "routes": routes}]},
        "http_filters": [
            {"name": "envoy.filters.http.health_check", "typed_config": health},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {_T: f"{_API}.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "name": "ready",
        "address": {"socket_address": {"address": address, "port_value": port}},
        # A port held by another process fails Envoy's start instead of being shared.
        "enable_reuse_port": False,
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }

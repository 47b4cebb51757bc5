"""Envoy's config as files it watches, so a new gateway config needs no restart.

The bootstrap is static: admin on a Unix socket, the ext_proc cluster, and, in
a pod, a readiness listener. Clusters, routes and listeners come from ``cds.yaml``,
``rds.yaml`` and ``lds.yaml`` beside it (file-based xDS). Envoy re-reads them
when a file is *moved* into the directory, so every write is a rename, in the
order clusters, routes, listener: nothing names what does not exist yet.

Envoy refuses to start when a watched file is missing: the ext_proc writes all
three before it reports healthy, and the proxy container starts after that.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import GatewayConfig
from ..prometheus.config import PrometheusConfig
from .bootstrap import (
    admin,
    app_listener,
    extproc_cluster,
    layered_runtime,
    overload_manager,
    provider_clusters,
    route_config,
)
from .probe import metrics_cluster, metrics_socket_beside, probe_listener

BOOTSTRAP = "envoy.yaml"
LISTENERS = "lds.yaml"
ROUTES = "rds.yaml"
CLUSTERS = "cds.yaml"
RESOURCES = (CLUSTERS, ROUTES, LISTENERS)
_LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
_CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
_ROUTES_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
_T = "@type"


@dataclass(frozen=True, slots=True)
class EnvoyFiles:
    directory: Path
    socket: str
    # Envoy's admin API: a Unix socket of mode 0600 (envoy_bootstrap.admin).
    admin_socket: str
    # A listener on every address that serves only /ready and the scrape
    # path, so probes never reach the admin API; ready means Envoy runs and
    # the ext_proc answers (envoy/probe.py).
    ready_port: int | None = None
    ready_address: str = "0.0.0.0"

    @property
    def bootstrap_path(self) -> Path:
        return self.directory / BOOTSTRAP

    @property
    def metrics_socket(self) -> str:
        return metrics_socket_beside(self.socket)

    def bootstrap(self, metrics: PrometheusConfig | None = None) -> dict[str, Any]:
        """Static; ``metrics`` (read at start only) puts the scrape path on the probe port."""
        static: dict[str, Any] = {"clusters": [extproc_cluster(self.socket)]}
        if self.ready_port is not None:
            static["listeners"] = [probe_listener(self.ready_port, metrics, self.ready_address)]
            if metrics is not None and metrics.enabled:
                static["clusters"].append(metrics_cluster(self.metrics_socket))
        return {
            # File-based xDS requires node id and cluster.
            "node": {"id": "sidegate", "cluster": "sidegate"},
            "admin": admin(self.admin_socket),
            "overload_manager": overload_manager(),
            "layered_runtime": layered_runtime(),
            "static_resources": static,
            "dynamic_resources": {
                "lds_config": self._source(LISTENERS),
                "cds_config": self._source(CLUSTERS),
            },
        }

    def _source(self, name: str) -> dict[str, Any]:
        return {
            "resource_api_version": "V3",
            "path_config_source": {
                "path": str(self.directory / name),
                "watched_directory": {"path": str(self.directory)},
            },
        }

    def write(self, config: GatewayConfig, version: str = "0") -> None:
        """Write the bootstrap and this config's listeners and clusters."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.write_resources(config, version)
        _replace(self.bootstrap_path, _dump(self.bootstrap(config.telemetry.prometheus)))

    def write_resources(self, config: GatewayConfig, version: str = "0") -> None:
        self.write_clusters(config, version)
        self.write_routes(config, version)

    def write_clusters(self, config: GatewayConfig, version: str = "0") -> None:
        # Envoy reports version_info back as lds/cds.version_text: how a
        # reload learns that Envoy took it.
        clusters = [{_T: _CLUSTER_TYPE, **c} for c in provider_clusters(config)]
        self._put(CLUSTERS, _dump({"version_info": version, "resources": clusters}))

    def write_routes(self, config: GatewayConfig, version: str = "0") -> None:
        """The routes and the listener (after the clusters they name exist)."""
        routes = {_T: _ROUTES_TYPE, **route_config(config)}
        self._put(ROUTES, _dump({"version_info": version, "resources": [routes]}))
        listener = {_T: _LISTENER_TYPE, **app_listener(config, rds=self._source(ROUTES))}
        self._put(LISTENERS, _dump({"version_info": version, "resources": [listener]}))

    def snapshot(self) -> dict[str, str]:
        return {n: (self.directory / n).read_text() for n in RESOURCES}

    def restore(self, snapshot: dict[str, str]) -> None:
        for name in RESOURCES:
            self._put(name, snapshot[name])

    def _put(self, name: str, text: str) -> None:
        _replace(self.directory / name, text)

    def ready(self) -> bool:
        return all((self.directory / n).is_file() for n in (BOOTSTRAP, *RESOURCES))


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=120)


def _replace(path: Path, text: str) -> None:
    """Write by rename: readers never see half a file, and Envoy sees a move."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

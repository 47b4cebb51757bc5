"""sidegate's own metrics as Prometheus text.

The OpenTelemetry instruments (``extproc/telemetry``) reach Prometheus through
one more MetricReader on their MeterProvider: the OpenTelemetry Prometheus
exporter's, into a registry of our own (never prometheus_client's global one,
so a second gateway in one process, as in the tests, has its own numbers).
Names follow that exporter: dots become underscores, the unit is a suffix and
counters end in ``_total``; none starts with ``envoy_``, which is Envoy's.
"""

from __future__ import annotations

from collections.abc import Iterator

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import CardinalityLimits, MetricReader
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .config import PrometheusConfig

# The ext_proc process's CPU and memory, beside Envoy's server stats.
PROCESS_NAMESPACE = "sidegate_extproc"
ENVOY_UP = "sidegate_envoy_stats_up"


class _EnvoyStatsUp(Collector):
    """1 when the last scrape carried Envoy's stats, 0 when Envoy's admin did not answer."""

    def __init__(self) -> None:
        self.up: bool | None = None

    def collect(self) -> Iterator[Metric]:
        if self.up is None:  # Envoy's stats are not asked for (envoy_stats: none)
            return
        yield GaugeMetricFamily(
            ENVOY_UP,
            "Whether this scrape carries Envoy's stats (0: its admin API did not answer in time)",
            value=1.0 if self.up else 0.0,
        )


def _limits(series: int) -> CardinalityLimits:
    return {
        kind: series
        for kind in (
            Counter,
            UpDownCounter,
            Histogram,
            ObservableCounter,
            ObservableUpDownCounter,
            ObservableGauge,
        )
    }


class Exposition:
    """A registry holding sidegate's metrics; ``reader`` joins the MeterProvider."""

    def __init__(self, config: PrometheusConfig) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.reader: MetricReader = PrometheusMetricReader(
            # The scope (sidegate's meter name and version) on every series
            # says nothing a scrape target does not already say.
            scope_info_enabled=False,
            registry=self.registry,
            cardinality_limits=_limits(config.max_series_per_metric),
        )
        ProcessCollector(namespace=PROCESS_NAMESPACE, registry=self.registry)
        self._envoy = _EnvoyStatsUp()
        self.registry.register(self._envoy)
        self._provider: MeterProvider | None = None

    def provider(self) -> MeterProvider:
        """A MeterProvider reading into this registry, for a process whose
        telemetry has none of its own (a reader serves exactly one provider)."""
        if self._provider is None:
            self._provider = MeterProvider(metric_readers=[self.reader])
        return self._provider

    def without_instruments(self) -> None:
        """No MeterProvider took ``reader`` (telemetry off): serve the rest only."""
        self.reader.shutdown()

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    def render(self, envoy_up: bool | None = None) -> bytes:
        """The text exposition (format 0.0.4) of every sidegate metric.

        Runs the OpenTelemetry collection (each instrument's lock, briefly):
        call it off the event loop.
        """
        self._envoy.up = envoy_up
        return generate_latest(self.registry)

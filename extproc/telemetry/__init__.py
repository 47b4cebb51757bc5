"""OpenTelemetry traces and metrics of every request, with the official SDK.

``start`` builds what the ``telemetry:`` config asks for, once per process
(the gateway keeps it across reloads); the completion listener
``listener.RecordTelemetry`` turns each request's record into spans and
metric points, and the provider stage asks ``Telemetry.tracing`` for each
attempt's ``traceparent``.

Other exporters of the same metrics (a Prometheus endpoint, a test's
in-memory reader) pass their ``MetricReader`` to ``start(metric_readers=...)``:
the meter provider exists whenever metrics are enabled and something reads
them, OTLP export or not. With telemetry off (``telemetry.enabled: false`` or
``OTEL_SDK_DISABLED=true``) nothing of the SDK is imported and the listener
returns at once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .config import TelemetryConfig

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader

    from ..config import GatewayConfig
    from ..state import RequestState
    from .metrics import Metrics
    from .tracing import Tracing

log = logging.getLogger(__name__)

__all__ = ["Telemetry", "TelemetryConfig", "start"]

# What a shutdown may take: a collector that is down must not hold up an exit.
SHUTDOWN_TIMEOUT = 5.0


class Telemetry:
    """The tracing and metrics a gateway records into; either may be None (off)."""

    def __init__(self, tracing: Tracing | None = None, metrics: Metrics | None = None) -> None:
        self.tracing = tracing
        self.metrics = metrics
        self.failures = 0  # records that raised (a bug): counted, logged once

    @property
    def active(self) -> bool:
        return self.tracing is not None or self.metrics is not None

    def record(
        self,
        state: RequestState,
        config: GatewayConfig,
        scrubber: Callable[[], Callable[[bytes], bytes]] = lambda: bytes,
    ) -> None:
        """Record ``state``'s metric points and spans (``scrubber``: see ``Tracing.record``)."""
        try:
            if self.metrics is not None:
                self.metrics.record(state, config)
            if self.tracing is not None:
                self.tracing.record(state, config, scrubber)
        except Exception:
            # Telemetry never fails a request; a bug here is logged once, not per request.
            self.failures += 1
            if self.failures == 1:
                log.exception("telemetry: recording a request failed (logged once)")

    def count_in_flight(self, in_flight: Callable[[], int]) -> None:
        """Report ``in_flight()`` as the requests being served (the gateway's table)."""
        if self.metrics is not None:
            self.metrics.in_flight = in_flight

    def count_audit_lost(self, lost: Callable[[], dict[str, int]]) -> None:
        """Report ``lost()`` (records lost, by audit sink) as a counter."""
        if self.metrics is not None:
            self.metrics.audit_lost = lost

    def extproc_error(self, stage: str) -> None:
        if self.metrics is not None:
            self.metrics.extproc_error(stage)

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Flush and stop the exporters, waiting at most ``timeout`` seconds."""
        parts: list[Callable[[], None]] = [
            p.shutdown for p in (self.tracing, self.metrics) if p is not None
        ]
        if not parts:
            return
        done = threading.Event()

        def run() -> None:
            for part in parts:
                try:
                    part()
                except Exception:
                    log.warning("telemetry: shutdown failed", exc_info=True)
            done.set()

        threading.Thread(target=run, name="telemetry-shutdown", daemon=True).start()
        if not done.wait(timeout):
            log.warning(
                "telemetry: exporters did not finish within %.0fs; spans may be lost", timeout
            )


def disabled(env: os._Environ[str] | dict[str, str] = os.environ) -> bool:
    return env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def start(
    config: TelemetryConfig,
    *,
    metric_readers: Sequence[MetricReader] = (),
    env: os._Environ[str] | dict[str, str] = os.environ,
) -> Telemetry:
    """Build the tracer and meter providers ``config`` asks for.

    ``metric_readers``: readers besides OTLP export (a Prometheus reader):
    the meter provider exists whenever metrics are enabled and any reader
    will read them. Pass the result to ``Gateway(config, telemetry=...)``.
    """
    if not config.enabled or disabled(env):
        return Telemetry()
    from .destinations import exports

    traced = config.traces.enabled and exports("TRACES", config.export, env)
    readers: list[MetricReader] = list(metric_readers)
    pushed = config.metrics.enabled and exports("METRICS", config.export, env)
    if not traced and not (config.metrics.enabled and (readers or pushed)):
        return Telemetry()  # nothing would read what is recorded: load nothing
    if traced or pushed:
        from . import protos

        protos.check()
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

    from .. import __version__
    from . import quiet
    from .semconv import names

    quiet.install()

    service = config.service_name or env.get("OTEL_SERVICE_NAME") or "sidegate"
    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES; the config's name wins over it.
    resource = Resource.create({SERVICE_NAME: service, SERVICE_VERSION: __version__})
    naming = names(env)

    tracing = None
    if traced:
        from .tracing import Tracing, span_exporter

        tracing = Tracing(config, resource, naming, span_exporter(config.export, env), env)

    metrics = None
    if config.metrics.enabled:
        if pushed:
            readers.append(_otlp_reader(config, env))
        if readers:
            from .metrics import Metrics

            def dropped() -> int:
                return tracing.dropped if tracing is not None else 0

            metrics = Metrics(resource, naming, readers, dropped)
    return Telemetry(tracing, metrics)


def _otlp_reader(config: TelemetryConfig, env: os._Environ[str] | dict[str, str]) -> MetricReader:
    from typing import Any

    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    from .config import Protocol
    from .destinations import exporter_args

    protocol, kwargs = exporter_args(config.export, "METRICS", "/v1/metrics", env)
    if protocol is Protocol.GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter: Any = OTLPMetricExporter(**kwargs)
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HTTPMetricExporter,
        )

        exporter = HTTPMetricExporter(**kwargs)
    interval = config.metrics.export_interval
    return PeriodicExportingMetricReader(
        exporter, export_interval_millis=interval * 1000 if interval is not None else None
    )

"""The ``telemetry:`` config section: OpenTelemetry traces and metrics.

What the config sets wins; what it leaves unset falls back to the standard
``OTEL_*`` environment variables (read here or by the SDK's exporters), then
to the SDK's defaults. ``OTEL_SDK_DISABLED=true`` turns everything off
whatever the config says: it is the operator's kill switch.

The export settings (endpoint, protocol, sampler, queue, intervals) are read
when sidegate starts; a reload that changes them says so and they apply on the
next start. The per-request ones (content capture, caller labels) follow a
reload at once.

Nothing here imports the SDK: a gateway with telemetry off never loads it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..config import Reader


class Protocol(enum.StrEnum):
    GRPC = "grpc"
    HTTP = "http/protobuf"


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
CALLER_LABELS = ("user", "tenant", "workload")


@dataclass(frozen=True, slots=True)
class Export:
    """Where OTLP goes. None: the ``OTEL_EXPORTER_OTLP_*`` variables decide."""

    endpoint: str | None = None
    protocol: Protocol | None = None
    timeout: float | None = None  # seconds, per export call


@dataclass(frozen=True, slots=True)
class Traces:
    enabled: bool = True
    sampler: str | None = None  # None: OTEL_TRACES_SAMPLER, else parentbased_always_on
    sampler_ratio: float | None = None  # for the *traceidratio samplers
    # The span queue between requests and the exporter thread: a collector
    # that is down or slow fills it, and spans past it are dropped (counted).
    max_queue_size: int | None = None  # None: OTEL_BSP_MAX_QUEUE_SIZE, else 2048
    max_export_batch_size: int | None = None  # None: OTEL_BSP_MAX_EXPORT_BATCH_SIZE, else 512
    schedule_delay: float | None = None  # seconds; None: OTEL_BSP_SCHEDULE_DELAY, else 5


@dataclass(frozen=True, slots=True)
class Metrics:
    enabled: bool = True
    export_interval: float | None = None  # seconds; None: OTEL_METRIC_EXPORT_INTERVAL, else 60
    # Caller dimensions added as metric attributes. Off by default: a raw
    # user id per series makes a metric store's cardinality unbounded.
    caller_labels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Content:
    # Routes (the names clients ask for) whose prompts and responses go into
    # spans, as the GenAI conventions' content attributes; "*" for all.
    routes: tuple[str, ...] = ()
    max_chars: int = 16384  # per attribute; longer content is cut and marked

    def captures(self, route: str) -> bool:
        return bool(self.routes) and ("*" in self.routes or route in self.routes)


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    enabled: bool = True
    service_name: str | None = None  # None: OTEL_SERVICE_NAME, else "sidegate"
    export: Export = field(default_factory=Export)
    traces: Traces = field(default_factory=Traces)
    metrics: Metrics = field(default_factory=Metrics)
    content: Content = field(default_factory=Content)

    @property
    def start_settings(self) -> tuple[object, ...]:
        """What is read once at start; a reload that changes it applies on restart."""
        return (
            self.enabled,
            self.service_name,
            self.export,
            self.traces,
            self.metrics.enabled,
            self.metrics.export_interval,
        )


def parse_telemetry_config(root: Reader, routes: object) -> TelemetryConfig:
    r = root.child("telemetry")
    r.mapping(["enabled", "service_name", "export", "traces", "metrics", "content"], optional=True)

    e_r = r.child("export")
    e_r.mapping(["endpoint", "protocol", "timeout"], optional=True)
    endpoint = e_r.child("endpoint").opt_string()
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise e_r.child("endpoint").fail(
                "expected an http:// or https:// URL such as http://collector:4317, "
                f"got {endpoint!r}"
            )
    protocol_r = e_r.child("protocol")
    protocol = None
    if protocol_r.value is not None:
        try:
            protocol = Protocol(protocol_r.string())
        except ValueError:
            raise protocol_r.fail(
                "expected one of: " + ", ".join(p.value for p in Protocol)
            ) from None
    timeout_r = e_r.child("timeout")
    export = Export(
        endpoint=endpoint,
        protocol=protocol,
        timeout=timeout_r.duration(0.0) if timeout_r.value is not None else None,
    )

    t_r = r.child("traces")
    t_r.mapping(
        [
            "enabled",
            "sampler",
            "sampler_ratio",
            "max_queue_size",
            "max_export_batch_size",
            "schedule_delay",
        ],
        optional=True,
    )
    sampler_r = t_r.child("sampler")
    sampler = sampler_r.opt_string()
    if sampler is not None and sampler not in SAMPLERS:
        raise sampler_r.fail("expected one of: " + ", ".join(SAMPLERS))
    ratio_r = t_r.child("sampler_ratio")
    ratio = None
    if ratio_r.value is not None:
        ratio = ratio_r.number(0.0)
        if ratio > 1.0:
            raise ratio_r.fail(f"expected a number between 0 and 1, got {ratio_r.value}")
    queue = _opt_int(t_r.child("max_queue_size"), 1, 1_000_000)
    batch = _opt_int(t_r.child("max_export_batch_size"), 1, 1_000_000)
    if queue is not None and batch is not None and batch > queue:
        raise t_r.child("max_export_batch_size").fail(
            f"must not exceed max_queue_size ({queue}), got {batch}"
        )
    delay_r = t_r.child("schedule_delay")
    traces = Traces(
        enabled=t_r.child("enabled").boolean(True),
        sampler=sampler,
        sampler_ratio=ratio,
        max_queue_size=queue,
        max_export_batch_size=batch,
        schedule_delay=delay_r.duration(0.0) if delay_r.value is not None else None,
    )

    m_r = r.child("metrics")
    m_r.mapping(["enabled", "export_interval", "caller_labels"], optional=True)
    labels: list[str] = []
    for item in m_r.child("caller_labels").elements():
        label = item.string()
        if label not in CALLER_LABELS:
            raise item.fail("expected one of: " + ", ".join(CALLER_LABELS))
        labels.append(label)
    interval_r = m_r.child("export_interval")
    metrics = Metrics(
        enabled=m_r.child("enabled").boolean(True),
        export_interval=interval_r.duration(0.0) if interval_r.value is not None else None,
        caller_labels=tuple(dict.fromkeys(labels)),
    )

    c_r = r.child("content")
    c_r.mapping(["routes", "max_chars"], optional=True)
    names: list[str] = []
    known = routes if isinstance(routes, dict) else {}
    for item in c_r.child("routes").elements():
        name = item.string()
        if name != "*" and name not in known:
            raise item.fail(f"no route or model named {name!r}")
        names.append(name)
    content = Content(
        routes=tuple(names),
        max_chars=c_r.child("max_chars").integer(16384, minimum=64, maximum=1_000_000),
    )

    return TelemetryConfig(
        enabled=r.child("enabled").boolean(True),
        service_name=r.child("service_name").opt_string(),
        export=export,
        traces=traces,
        metrics=metrics,
        content=content,
    )


def _opt_int(r: Reader, minimum: int, maximum: int) -> int | None:
    return None if r.value is None else r.integer(0, minimum=minimum, maximum=maximum)

"""The audit log as OpenTelemetry log records, exported by OTLP (the SDK's batch exporter).

Each record becomes one log record whose body is the sealed JSON line (so a
copy kept by the collector's backend verifies like a file), with the request
id, the kind and the chain position as attributes and the request's trace as
its context. The exporter batches in a thread of its own with a bounded
queue: a collector that is slow or away never holds a request, and this sink
is never waited for by the durable mode (a collector acknowledges a batch
later, if ever). Like stdout, its chain begins again with every process.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ..config import ConfigError
from . import config
from .sink import Sink

log = logging.getLogger(__name__)

EVENT_NAME = "sidegate.audit"
SCOPE = "sidegate.audit"


def _exporter(cfg: config.OtlpSink) -> Any:
    try:
        exporter: Any
        if cfg.protocol is config.OtlpProtocol.GRPC:
            from opentelemetry.exporter.otlp.proto.grpc import _log_exporter as exporter
        else:
            from opentelemetry.exporter.otlp.proto.http import _log_exporter as exporter
    except ImportError as e:
        raise ConfigError(
            "audit.otlp.protocol",
            f"the OTLP {cfg.protocol.value} exporter is not installed ({e.name})",
        ) from None
    from ..telemetry import protos

    try:
        protos.check()
    except protos.ProtosOverwritten as e:
        raise ConfigError("audit.otlp", str(e)) from None
    endpoint = cfg.endpoint
    if (
        endpoint
        and cfg.protocol is config.OtlpProtocol.HTTP
        and urlsplit(endpoint).path in ("", "/")
    ):
        # As OTEL_EXPORTER_OTLP_ENDPOINT: the collector's base URL, the signal's path added.
        endpoint = endpoint.rstrip("/") + "/v1/logs"
    return exporter.OTLPLogExporter(endpoint=endpoint) if endpoint else exporter.OTLPLogExporter()


class OtlpSink(Sink):
    durable = False

    def __init__(self, cfg: config.OtlpSink) -> None:
        super().__init__()
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        self.cfg = cfg
        self.name = f"otlp {cfg.endpoint or '(OTEL_EXPORTER_OTLP_ENDPOINT)'}"
        # A provider of its own: the audit log must not depend on whether, or
        # how, traces and metrics are exported.
        self._provider = LoggerProvider()
        self._provider.add_log_record_processor(
            BatchLogRecordProcessor(
                _exporter(cfg),
                max_queue_size=cfg.max_queue,
                max_export_batch_size=min(512, cfg.max_queue),
            )
        )
        self._logger = self._provider.get_logger(SCOPE)

    def open(self) -> list[dict[str, object]]:
        return []

    def write(self, bodies: Sequence[bytes], sync: bool) -> None:
        from opentelemetry._logs import SeverityNumber

        now = time.time_ns()
        for body in bodies:
            line = self.chain.seal(body)
            record = json.loads(line)
            attributes: dict[str, str | int] = {
                "sidegate.audit.kind": record.get("kind", ""),
                "sidegate.audit.seq": record["seq"],
            }
            if isinstance(record.get("request_id"), str):
                attributes["sidegate.request.id"] = record["request_id"]
            self._logger.emit(
                timestamp=now,
                context=_trace_context(record.get("trace_id"), record.get("span_id")),
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=line[:-1].decode("ascii"),
                attributes=attributes,
                event_name=EVENT_NAME,
            )

    def close(self) -> None:
        try:
            self._provider.force_flush(5000)
        finally:
            self._provider.shutdown()


def _trace_context(trace_id: object, span_id: object) -> Any:
    if not isinstance(trace_id, str) or len(trace_id) != 32:
        return None
    from opentelemetry import trace

    try:
        tid = int(trace_id, 16)
        sid = int(span_id, 16) if isinstance(span_id, str) and len(span_id) == 16 else 1
    except ValueError:
        return None
    span = trace.NonRecordingSpan(
        trace.SpanContext(tid, sid, is_remote=True, trace_flags=trace.TraceFlags(1))
    )
    return trace.set_span_in_context(span)

"""An in-process OTLP receiver for tests: traces, metrics and logs, over gRPC and HTTP.

It speaks the real OTLP services (``opentelemetry-proto``'s TraceService,
MetricsService and LogsService, served with grpcio; and ``POST /v1/traces``,
``/v1/metrics``, ``/v1/logs`` with protobuf bodies over HTTP) and keeps what
it receives, flattened for assertions. ``stall()`` makes every export hang
until ``resume()`` (a slow collector); ``stop()`` closes the ports (a
collector that is down).

    with OtlpReceiver() as otlp:
        ... endpoint=otlp.grpc_endpoint  (or otlp.http_endpoint)
        spans = otlp.wait_spans(lambda s: s.name == "chat smart")
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as logs_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc
from opentelemetry.proto.common.v1 import common_pb2

from tests.harness import free_port
from tests.secret_scan import PRODUCED


def value_of(v: common_pb2.AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    if which is None:
        return None
    return getattr(v, which)


def attrs_of(kvs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


@dataclass
class Span:
    name: str
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_span_id: str  # "" for a root span
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    resource: dict[str, Any]


@dataclass
class Point:
    """One data point of one metric: a sum's value, or a histogram's count and sum."""

    metric: str
    unit: str
    kind: str  # "sum", "gauge", "histogram"
    attributes: dict[str, Any]
    value: float  # a sum's or gauge's value; a histogram's sum
    count: int = 0  # a histogram's count


@dataclass
class LogRecord:
    body: Any
    attributes: dict[str, Any]
    trace_id: str
    span_id: str
    time_ns: int
    resource: dict[str, Any]


@dataclass
class Received:
    spans: list[Span] = field(default_factory=list)
    metric_exports: list[list[Point]] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=lambda: {"traces": 0, "metrics": 0, "logs": 0})


class OtlpReceiver:
    def __init__(self) -> None:
        self.received = Received()
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self.grpc_port = free_port()
        self.http_port = free_port()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None

    # -- endpoints --

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # -- life --

    def start(self) -> OtlpReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        trace_grpc.add_TraceServiceServicer_to_server(_Traces(self), server)
        metrics_grpc.add_MetricsServiceServicer_to_server(_Metrics(self), server)
        logs_grpc.add_LogsServiceServicer_to_server(_Logs(self), server)
        server.add_insecure_port(f"127.0.0.1:{self.grpc_port}")
        server.start()
        self._grpc = server
        self._http = ThreadingHTTPServer(("127.0.0.1", self.http_port), _http_handler(self))
        self._http.daemon_threads = True
        threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()
        return self

    def stop(self) -> None:
        self._open.set()  # let stalled handlers finish
        if self._grpc is not None:
            self._grpc.stop(0).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stall(self) -> None:
        """Every export from now on hangs (a collector that accepts and never answers)."""
        self._open.clear()

    def resume(self) -> None:
        self._open.set()

    # -- intake --

    def _wait_open(self) -> None:
        # Bounded: a stalled handler gives up after a minute, whatever the test does.
        self._open.wait(60)

    def take_traces(self, req: trace_pb.ExportTraceServiceRequest) -> None:
        self._wait_open()
        spans = []
        for rs in req.resource_spans:
            resource = attrs_of(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    spans.append(
                        Span(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attributes=attrs_of(s.attributes),
                            status_code=s.status.code,
                            status_message=s.status.message,
                            resource=resource,
                        )
                    )
        with self._lock:
            self.received.calls["traces"] += 1
            self.received.spans.extend(spans)
        # Every span the suite exports is scanned for keys (test_no_secrets).
        PRODUCED.text("span", "an OTLP receiver", str(req), len(spans))

    def take_metrics(self, req: metrics_pb.ExportMetricsServiceRequest) -> None:
        self._wait_open()
        points: list[Point] = []
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    if kind == "sum":
                        for p in m.sum.data_points:
                            value = p.as_double if p.HasField("as_double") else p.as_int
                            points.append(
                                Point(m.name, m.unit, "sum", attrs_of(p.attributes), value)
                            )
                    elif kind == "gauge":
                        for p in m.gauge.data_points:
                            value = p.as_double if p.HasField("as_double") else p.as_int
                            points.append(
                                Point(m.name, m.unit, "gauge", attrs_of(p.attributes), value)
                            )
                    elif kind == "histogram":
                        for p in m.histogram.data_points:
                            attrs = attrs_of(p.attributes)
                            points.append(
                                Point(m.name, m.unit, "histogram", attrs, p.sum, count=p.count)
                            )
        with self._lock:
            self.received.calls["metrics"] += 1
            self.received.metric_exports.append(points)

    def take_logs(self, req: logs_pb.ExportLogsServiceRequest) -> None:
        self._wait_open()
        records = []
        for rl in req.resource_logs:
            resource = attrs_of(rl.resource.attributes)
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    records.append(
                        LogRecord(
                            body=value_of(r.body),
                            attributes=attrs_of(r.attributes),
                            trace_id=r.trace_id.hex(),
                            span_id=r.span_id.hex(),
                            time_ns=r.time_unix_nano,
                            resource=resource,
                        )
                    )
        with self._lock:
            self.received.calls["logs"] += 1
            self.received.logs.extend(records)
        PRODUCED.text("audit", "an OTLP receiver's log records", str(req), len(records))

    # -- reading --

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self.received.spans)

    def logs(self) -> list[LogRecord]:
        with self._lock:
            return list(self.received.logs)

    def latest_points(self) -> list[Point]:
        """The points of the last metrics export (cumulative: the totals so far)."""
        with self._lock:
            exports = self.received.metric_exports
            return list(exports[-1]) if exports else []

    def wait_spans(
        self, match: Callable[[Span], bool], count: int = 1, timeout: float = 15.0
    ) -> list[Span]:
        return _wait(lambda: [s for s in self.spans() if match(s)], count, timeout, "spans")

    def wait_logs(
        self, match: Callable[[LogRecord], bool], count: int = 1, timeout: float = 15.0
    ) -> list[LogRecord]:
        return _wait(lambda: [r for r in self.logs() if match(r)], count, timeout, "log records")

    def wait_metric(
        self, condition: Callable[[list[Point]], bool], timeout: float = 15.0
    ) -> list[Point]:
        """The latest export's points, once ``condition`` holds for them."""
        deadline = time.monotonic() + timeout
        while True:
            points = self.latest_points()
            if condition(points):
                return points
            if time.monotonic() >= deadline:
                names = sorted({p.metric for p in points})
                raise AssertionError(f"timed out after {timeout:g}s waiting for metrics; have {names}")
            time.sleep(0.05)


def _wait(get: Callable[[], list[Any]], count: int, timeout: float, what: str) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = get()
        if len(found) >= count:
            return found
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {count} {what}, got {len(found)}"
            )
        time.sleep(0.05)


class _Traces(trace_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, owner: OtlpReceiver) -> None:
        self.owner = owner

    def Export(self, request: Any, context: Any) -> Any:
        self.owner.take_traces(request)
        return trace_pb.ExportTraceServiceResponse()


class _Metrics(metrics_grpc.MetricsServiceServicer):  # type: ignore[misc]
    def __init__(self, owner: OtlpReceiver) -> None:
        self.owner = owner

    def Export(self, request: Any, context: Any) -> Any:
        self.owner.take_metrics(request)
        return metrics_pb.ExportMetricsServiceResponse()


class _Logs(logs_grpc.LogsServiceServicer):  # type: ignore[misc]
    def __init__(self, owner: OtlpReceiver) -> None:
        self.owner = owner

    def Export(self, request: Any, context: Any) -> Any:
        self.owner.take_logs(request)
        return logs_pb.ExportLogsServiceResponse()


def _http_handler(owner: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, tuple[Any, Callable[[Any], None], Any]] = {
        "/v1/traces": (
            trace_pb.ExportTraceServiceRequest,
            owner.take_traces,
            trace_pb.ExportTraceServiceResponse,
        ),
        "/v1/metrics": (
            metrics_pb.ExportMetricsServiceRequest,
            owner.take_metrics,
            metrics_pb.ExportMetricsServiceResponse,
        ),
        "/v1/logs": (
            logs_pb.ExportLogsServiceRequest,
            owner.take_logs,
            logs_pb.ExportLogsServiceResponse,
        ),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            route = routes.get(self.path)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if route is None or self.headers.get("content-type") != "application/x-protobuf":
                self.send_response(404 if route is None else 415)
                self.send_header("content-length", "0")
                self.end_headers()
                return
            request_type, take, response_type = route
            take(request_type.FromString(body))
            out = response_type().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet in test output

    return Handler

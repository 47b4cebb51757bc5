"""An OTLP/gRPC endpoint that accepts every export and keeps nothing, for ``sidegate bench``.

The bench's telemetry row exports to it, so the row shows what recording
and exporting cost the gateway, not what a collector does with the data.
Run as ``python -m extproc.devtools.otlp_sink PORT``.
"""

from __future__ import annotations

import sys
from concurrent import futures
from typing import Any

import grpc

# Export(Export{Traces,Metrics,Logs}ServiceRequest) → an empty response, which
# is a zero-length protobuf message whatever its type.
SERVICES = (
    "opentelemetry.proto.collector.trace.v1.TraceService",
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.logs.v1.LogsService",
)


def _accept(request: bytes, context: Any) -> bytes:
    return b""


def serve(port: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(_accept)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(name, {"Export": handler}) for name in SERVICES]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


if __name__ == "__main__":
    serve(int(sys.argv[1])).wait_for_termination()

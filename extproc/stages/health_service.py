"""The grpc.health.v1 ``Health`` service of the ext_proc.

Envoy health-checks the ext_proc cluster with ``Check`` (envoy_bootstrap), and
the sidecar's ``/ready`` follows the result; ``sidegate health`` makes the same
call. The two messages are one field each, encoded here rather than adding a
package for them.
"""

from __future__ import annotations

from typing import Any

import grpc

SERVICE = "grpc.health.v1.Health"
CHECK = f"/{SERVICE}/Check"
# HealthCheckResponse{status: SERVING}: field 1, varint 1.
SERVING = b"\x08\x01"
_SERVED = ("", "envoy.service.ext_proc.v3.ExternalProcessor")


def _service_name(request: bytes) -> str | None:
    """HealthCheckRequest.service (field 1, a string), or None if malformed."""
    if not request:
        return ""
    if request[0] != 0x0A or len(request) < 2 or request[1] >= 0x80:
        return None  # a name of 128 bytes or more is none of ours
    name = request[2 : 2 + request[1]]
    return name.decode(errors="replace") if len(name) == request[1] else None


async def _check(request: bytes, context: Any) -> bytes:
    if _service_name(request) not in _SERVED:
        await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
    return SERVING


def handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE, {"Check": grpc.unary_unary_rpc_method_handler(_check)}
    )

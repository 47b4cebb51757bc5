"""Check that the OTLP exporters will find OpenTelemetry's own protos.

xds-protos (Envoy's API, which the stages speak) ships an older copy of
``opentelemetry/proto`` in the same package path as ``opentelemetry-proto``;
whichever wheel pip unpacked last wins. With xds-protos's copy on top the
exporters fail on import (``InstrumentationScope`` is missing), deep inside a
thread: say so once, plainly, at start instead.
"""

from __future__ import annotations

FIX = "pip install --force-reinstall --no-deps opentelemetry-proto"


class ProtosOverwritten(RuntimeError):
    pass


def check() -> None:
    """Raise ``ProtosOverwritten`` naming the fix when the exporters' protos are stale."""
    from opentelemetry.proto.common.v1 import common_pb2

    if not hasattr(common_pb2, "InstrumentationScope"):
        raise ProtosOverwritten(
            "the OpenTelemetry protos in this environment are xds-protos's older copy "
            "(both packages install opentelemetry/proto), so OTLP export cannot work; "
            f"reinstall the real ones after xds-protos: {FIX}"
        )

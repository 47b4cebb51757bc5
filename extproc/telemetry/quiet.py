"""The SDK's export warnings, at most one of each kind a minute.

A collector that is down makes every export fail and retry, and the SDK's
exporters log each failure: a message every few seconds, for as long as the
collector is away. Each kind (logger, level, message template) is let through
once a minute with a count of what was held back, so an outage is still seen.
"""

from __future__ import annotations

import logging
import time

WINDOW = 60.0
LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.metrics._internal.export",
)


class OncePerWindow(logging.Filter):
    def __init__(self, window: float = WINDOW) -> None:
        super().__init__()
        self.window = window
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg)[:200])
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.window:
            self._last[key] = (last[0], last[1] + 1)
            return False
        held = last[1] if last is not None else 0
        self._last[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.window:.0f}s)"
        return True


_FILTER = OncePerWindow()


def install() -> None:
    """Rate-limit the exporters' loggers (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)

"""The completion listener that records each request's spans and metric points."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..pipeline.step import Needs
from ..scrub import Scrubber

if TYPE_CHECKING:
    from ..gateway import Gateway
    from ..state import RequestState


class _NeedsOf:
    """``needs`` of the class (what Envoy must send: usage, which the provider stage
    reads anyway) and of an instance (what its gateway's telemetry reads of the record)."""

    def __get__(self, obj: RecordTelemetry | None, owner: type) -> Needs:
        return Needs.USAGE if obj is None else obj.record_needs()


class RecordTelemetry:
    needs = _NeedsOf()

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def record_needs(self) -> Needs:
        """What the stages must note for it: nothing with telemetry off."""
        tel = self.gw.telemetry
        out = Needs.NOTHING
        if tel.tracing is not None:
            out |= Needs.TRACE_CONTEXT | Needs.CALLER | Needs.RESPONSE_META
        if tel.metrics is not None and self.gw.config.telemetry.metrics.caller_labels:
            out |= Needs.CALLER
        return out

    def __call__(self, state: RequestState) -> None:
        tel = self.gw.telemetry
        if tel.active:
            tel.record(state, self.gw.config, self._scrubber)

    def _scrubber(self) -> Callable[[bytes], bytes]:
        # Every key sidegate holds now, as the provider stage scrubs responses.
        keys = (k for ring in self.gw.keys.values() for k in ring.values())
        return Scrubber(keys).scrub

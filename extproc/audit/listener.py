"""The audit listener: the pipeline's last completion listener writes each request's record.

In the durable mode (``audit.durability: sync``) the record is written when
the response is about to end rather than when the request completes: a stage
about to send the app the last of its response (the final body chunk or
trailers, an error, a refusal) calls ``RequestTable.ending``, which asks this
listener for the record's write and waits for it first. Completion then finds
the record written. Requests whose end sidegate never sends (Envoy's own
answers: a timeout, no provider reachable; an app that left) are recorded at
completion, just after.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from typing import TYPE_CHECKING

from ..pipeline.step import Needs
from ..state import RequestState
from .config import Durability
from .record import build

if TYPE_CHECKING:
    from ..gateway import Gateway

# What the record reads beyond the basics; nothing while there is no audit log.
RECORD_NEEDS = Needs.CALLER | Needs.TRACE_CONTEXT | Needs.RESPONSE_META


class _Needs:
    """The class says all it may read (Envoy's modes); an instance what its config reads."""

    def __get__(self, listener: AuditRecords | None, owner: type) -> Needs:
        if listener is None:
            return RECORD_NEEDS
        return RECORD_NEEDS if listener.gw.audit.enabled else Needs.NOTHING


class AuditRecords:
    needs = _Needs()

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        # Requests recorded at their response's end, not to be recorded again
        # on completion (each completes once, so this holds requests in flight).
        self._recorded: set[int] = set()

    def ending(self, state: RequestState) -> Awaitable[bool] | None:
        """The app is about to get the end of its response: the durable write to wait for."""
        audit = self.gw.audit
        if not audit.enabled or audit.config.durability is not Durability.SYNC:
            return None
        if id(state) in self._recorded:
            return None
        self._recorded.add(id(state))
        return audit.submit(build(state, self.gw.config, self._keys))

    def __call__(self, state: RequestState) -> None:
        if id(state) in self._recorded:
            self._recorded.discard(id(state))
            return
        if self.gw.audit.enabled:
            self.gw.audit.submit(build(state, self.gw.config, self._keys))

    def _keys(self) -> Iterator[str]:
        for ring in self.gw.keys.values():
            yield from ring.values()

"""Per-request state shared by the policy stage and the provider stage.

Both stages run in this one process (the sidecar gives that affinity: one
ext_proc per Envoy, over a Unix socket) and meet on the request id header the
policy stage guarantees to be unique among requests in flight. The
``RequestTable`` is the one owner of that state: it admits a request, lets each
stage hold it, and completes it (the pipeline's completion listeners) when the
last stage lets go.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .apis import ClientApi
from .routing import RoutePlan
from .usage import Usage


@dataclass(slots=True)
class RequestState:
    id: str
    api: ClientApi
    plan: RoutePlan
    requested_model: str
    body: dict[str, Any]
    raw: str
    stream: bool
    include_usage: bool
    # Client headers each attempt sets or removes again (mutations leak between attempts).
    passthrough_headers: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0
    # ext_proc streams still working on this request (the policy stream, the
    # current attempt's). Envoy may close the policy stream once response
    # headers pass, before a stream's last chunk: the request is complete
    # only when both are done.
    holders: int = 1
    # The quota reservation admission made (a quota.enforcer.Reservation), settled on completion.
    reservation: object | None = None
    # Filled in by the provider stage when an attempt's response completes.
    provider: str | None = None
    model: str | None = None
    status: int | None = None
    usage: Usage | None = None


# Requests in flight one process holds at most: as many as Envoy opens
# processor streams for (envoy_bootstrap.EXTPROC_MAX_STREAMS). Ids may come
# from the client (x-request-id), so the table needs a bound of its own.
MAX_IN_FLIGHT = 100_000


class RequestTable:
    """Requests in flight, by id, and what runs when each completes."""

    def __init__(self, limit: int = MAX_IN_FLIGHT) -> None:
        self._items: dict[str, RequestState] = {}
        self.limit = limit
        self.listeners: list[Callable[[RequestState], None]] = []

    @property
    def full(self) -> bool:
        return len(self._items) >= self.limit

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def put(self, state: RequestState) -> None:
        self._items[state.id] = state

    def get(self, request_id: str) -> RequestState | None:
        return self._items.get(request_id)

    def pop(self, request_id: str) -> RequestState | None:
        return self._items.pop(request_id, None)

    def attach(self, state: RequestState) -> None:
        """One more stage holds ``state`` (an attempt's provider stage)."""
        state.holders += 1

    def release(self, state: RequestState) -> None:
        """A stage is done with ``state``; the last one out completes the request."""
        state.holders -= 1
        if state.holders > 0:
            return
        self._items.pop(state.id, None)
        for listener in self.listeners:
            listener(state)

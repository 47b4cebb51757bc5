"""Per-request state shared by the policy stage and the provider stage.

Both stages run in this one process (the sidecar gives that affinity: one
ext_proc per Envoy, over a Unix socket) and meet on the request id header the
policy stage guarantees to be unique among requests in flight.
"""

from __future__ import annotations

import time
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


# Requests in flight one ext_proc keeps state for. Each holds at least one of
# Envoy's streams to the ext_proc, whose cluster allows 100,000: this bound is
# reached only if streams are never closed, and then sheds instead of growing.
MAX_IN_FLIGHT = 100_000


class RequestTable:
    """Requests in flight, by id, at most ``capacity`` of them."""

    def __init__(self, capacity: int = MAX_IN_FLIGHT) -> None:
        self._items: dict[str, RequestState] = {}
        self.capacity = capacity

    @property
    def full(self) -> bool:
        return len(self._items) >= self.capacity

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

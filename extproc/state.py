"""Per-request state shared by the policy stage and the provider stage.

Both stages run in this one process (the sidecar gives that affinity: one
ext_proc per Envoy, over a Unix socket) and meet on the request id header the
policy stage guarantees to be unique among requests in flight. The
``RequestTable`` is the one owner of that state: it admits a request, lets each
stage hold it, and completes it (the pipeline's completion listeners) when the
last stage lets go.

The state is also the request's record: what every completion listener
(quotas, telemetry, metrics, audit) reads once the request is over. Requests
the policy stage answers itself get one too (no plan, ``answered`` set), so a
listener sees every request exactly once. The stages fill in only cheap
facts (times, statuses, ids the response carries); anything derived (cost,
the outcome's error type, wall-clock times) is computed by whoever reads it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .apis import ClientApi
from .routing import RoutePlan
from .usage import Usage

if TYPE_CHECKING:
    from .quota.caller import Caller


@dataclass(slots=True)
class Attempt:
    """One try at one provider, as the provider stage saw it (times: ``time.monotonic``)."""

    provider: str
    region: str | None
    model: str  # the config's model name
    model_id: str  # what the provider was asked for
    started: float
    responded: float | None = None  # the provider's response headers arrived
    first_chunk: float | None = None  # a streamed response's first bytes went to the client
    ended: float | None = None
    status: int | None = None  # the provider's status (None: no response, see ``error``)
    # Why there was no response: "timeout" (the attempt outlived timeouts.first_byte)
    # or "reset" (the connection failed or Envoy gave up on the attempt).
    error: str | None = None
    retry_after: str | None = None  # the provider's Retry-After on a failed response
    span_id: int = 0  # the span id the provider was given in its traceparent (0: none)

    @property
    def outcome(self) -> str:
        """The attempt's result as a short label: its status, or why it had none."""
        return str(self.status) if self.status is not None else (self.error or "reset")

    @property
    def failed(self) -> bool:
        return self.status is None or not 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class Answered:
    """The policy stage answered the request itself: a refusal, or a model list."""

    status: int
    code: str | None = None  # the error's machine-readable code, e.g. "model_not_found"
    quota: str | None = None  # the quota that refused it (429 rate_limit_exceeded)
    retry_after: int | None = None


@dataclass(slots=True)
class RequestState:
    id: str
    api: ClientApi | None  # None: the path named no API sidegate serves (refused)
    plan: RoutePlan | None  # None: answered before routing (``answered`` says why)
    requested_model: str
    body: dict[str, Any]
    raw: str
    stream: bool
    include_usage: bool
    # Client headers each attempt sets or removes again (mutations leak between attempts).
    passthrough_headers: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    # The wall clock at ``started``: any other monotonic time t of this request
    # is at ``started_wall + (t - started)`` (``wall``).
    started_wall: float = field(default_factory=time.time)
    ended: float | None = None  # the last stage let go (set by ``RequestTable.complete``)
    path: str = ""
    # The caller, when a quota or a listener needs it (``Needs.CALLER``).
    caller: Caller | None = None
    # The client's W3C trace context, as sent (``Needs.TRACE_CONTEXT``).
    traceparent: str | None = None
    tracestate: str | None = None
    # The trace and span ids of sidegate's span for this request (0: not traced);
    # each attempt's span id is in its ``Attempt``.
    trace_id: int = 0
    span_id: int = 0
    sampled: bool = False  # the trace's sampling decision (W3C trace-flags bit 0)
    attempts: list[Attempt] = field(default_factory=list)
    answered: Answered | None = None
    # ext_proc streams still working on this request (the policy stream, the
    # current attempt's). Envoy may close the policy stream once response
    # headers pass, before a stream's last chunk: the request is complete
    # only when both are done.
    holders: int = 1
    # The quota reservation admission made (a quota.enforcer.Reservation), settled on completion.
    reservation: object | None = None
    # Filled in by the provider stage when an attempt's response completes:
    # the answering provider and model (the config's name), the status the
    # client got, and what the response said about itself.
    provider: str | None = None
    model: str | None = None
    status: int | None = None
    usage: Usage | None = None
    response_id: str | None = None
    response_model: str | None = None
    finish_reasons: tuple[str, ...] = ()
    # A streamed response's first bytes went to the client (time to first token).
    first_token: float | None = None
    # The response as the client got it, kept (up to a bound) when a listener
    # records content for this route (``audit.content``); its full size in bytes.
    response_content: bytearray | None = None
    response_bytes: int = 0
    # The answer's text, kept only for a route that records content (bounded).
    output_text: str | None = None

    def wall(self, monotonic: float) -> float:
        """``monotonic`` (a time of this request) on the wall clock, in seconds."""
        return self.started_wall + (monotonic - self.started)

    @property
    def final_status(self) -> int | None:
        """The status the client got, as far as sidegate knows (None: no response came back)."""
        if self.answered is not None:
            return self.answered.status
        return self.status

    @property
    def error_type(self) -> str | None:
        """What went wrong, as OpenTelemetry's ``error.type`` (None: the request succeeded).

        A refusal's error code; a provider's error status; "timeout" or
        "reset" when the last attempt got no response; "incomplete" when the
        request ended before any attempt (the client left, or Envoy answered).
        """
        if self.answered is not None:
            a = self.answered
            return None if a.status < 400 else a.code or str(a.status)
        status = self.status
        if status is not None:
            return None if 200 <= status < 300 else str(status)
        if self.attempts:
            return self.attempts[-1].outcome
        return "incomplete"


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
        # Called just before the app gets the end of a response that sidegate
        # sends or passes on (``ending``); what they return is awaited first.
        self.before_end: list[Callable[[RequestState], Awaitable[object] | None]] = []

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
        self.complete(state)

    def ending(self, state: RequestState) -> list[Awaitable[object]]:
        """The app is about to get the end of ``state``'s response: what must finish first.

        The durable audit log's write (``audit.listener``); a stage awaits
        these before it sends the last body chunk, the trailers, an error or
        a refusal.
        """
        return [w for hook in self.before_end if (w := hook(state)) is not None]

    def complete(self, state: RequestState) -> None:
        """Hand ``state`` to the completion listeners: once per request, refusals included."""
        if state.ended is None:
            state.ended = time.monotonic()
        for listener in self.listeners:
            listener(state)

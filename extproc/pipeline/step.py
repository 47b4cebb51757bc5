"""What a pipeline step is: the context it works on, what it needs, what it may answer.

A request step runs in the policy stage, once per request, in the order the
pipeline lists it (``extproc.pipeline``). It reads and fills in the
``RequestContext``, and either lets the request go on (returns None), answers
it at once (returns an ``Answer``: a refusal, later a cached response), or
raises ``GatewayError``; both answers reach the client in its API's format.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..apis import ClientApi, ErrorStyle

if TYPE_CHECKING:
    from ..gateway import Gateway
    from ..quota.caller import Caller
    from ..routing import RoutePlan


class Needs(enum.Flag):
    """What a step or listener reads from the exchange; Envoy sends Python only that."""

    NOTHING = 0
    REQUEST_BODY = enum.auto()  # the parsed request body
    RESPONSE_HEADERS = enum.auto()
    RESPONSE_BODY = enum.auto()  # a non-streamed response, whole
    STREAM_CHUNKS = enum.auto()  # each chunk of a streamed response
    # The usage a completed request reports, read from the response.
    USAGE = RESPONSE_BODY | STREAM_CHUNKS
    # Parts of the request's record (``state.RequestState``) that cost something
    # to fill in; they change no Envoy mode. The caller for every request
    # (not only those under a quota), the client's trace context, and what a
    # response says about itself (id, model, finish reasons).
    CALLER = enum.auto()
    TRACE_CONTEXT = enum.auto()
    RESPONSE_META = enum.auto()


@dataclass(frozen=True, slots=True)
class Answer:
    """A response a step gives in place of the provider's (already in the caller's format)."""

    status: int
    body: bytes
    details: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class RequestContext:
    """One request as the policy stage's steps see it; steps fill it in order."""

    gw: Gateway
    headers: dict[str, str]
    api: ClientApi
    style: ErrorStyle
    raw: bytes
    body: dict[str, Any]
    text: str
    model: str = ""
    plan: RoutePlan | None = None
    caller: Caller | None = None
    # The quota reservation admission made (a quota.enforcer.Reservation).
    reservation: object | None = None


class Step:
    """A request step. Subclasses set ``needs`` and implement ``run``."""

    needs: Needs = Needs.REQUEST_BODY

    def suspends(self, ctx: RequestContext) -> bool:
        """Whether ``run`` may wait (on a store, a thread): the stage then buys time from Envoy."""
        return False

    async def run(self, ctx: RequestContext) -> Answer | None:
        """Go on (None), or answer the request. A run the caller leaves is cancelled:
        a step that commits to something mid-way undoes it then."""
        raise NotImplementedError

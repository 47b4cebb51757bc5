"""The request record of requests the policy stage answers itself, and the trace context in.

A routed request's record is the ``RequestState`` the policy stage puts in the
request table. A request answered before that (refused, or a model list) gets
one here, when its policy stream closes, so the completion listeners see every
request once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import GatewayError
from ..quota.caller import Caller, identify
from ..state import Answered, RequestState
from .step import Needs, RequestContext

if TYPE_CHECKING:
    from ..apis import ClientApi
    from ..gateway import Gateway

REQUEST_ID = "x-request-id"
MAX_PATH = 256


def answered_by(err: GatewayError) -> Answered:
    """The record of a refusal raised as ``err``."""
    quota = getattr(err, "quota", None)
    return Answered(err.status, err.code, quota or None, err.retry_after)


def answered_details(status: int, details: str) -> Answered:
    """The record of an answer given as an Envoy immediate response (``details``: its code)."""
    return Answered(status, details.removeprefix("sidegate_") or None)


def client_path(headers: dict[str, str]) -> str:
    """The path the client called, without its query and bounded (it is the client's text)."""
    return headers.get(":path", "").split("?", 1)[0][:MAX_PATH]


def trace_context(gw: Gateway, headers: dict[str, str], state: RequestState) -> None:
    """Copy the client's W3C trace context into ``state`` when a listener reads it."""
    if Needs.TRACE_CONTEXT in gw.record_needs:
        state.traceparent = headers.get("traceparent")
        state.tracestate = headers.get("tracestate")


def unrouted(
    gw: Gateway,
    headers: dict[str, str],
    api: ClientApi | None,
    ctx: RequestContext | None,
    answered: Answered | None,
    started: float,
    started_wall: float,
) -> RequestState:
    """The record of a request that never reached the request table.

    ``answered`` None: the policy stage never answered (the client left, or
    Envoy gave up on the stream first).
    """
    caller: Caller | None = ctx.caller if ctx is not None else None
    body = ctx.body if ctx is not None else {}
    if caller is None and api is not None and Needs.CALLER in gw.record_needs:
        caller = identify(gw.config.quota.identity, headers, api, body, strict=False)
    model = ctx.model if ctx is not None else ""
    if not model and isinstance(body.get("model"), str):
        model = body["model"]  # refused by validation after the model was read
    state = RequestState(
        id=headers.get(REQUEST_ID) or gw.new_request_id(),
        api=api,
        plan=None,
        requested_model=model,
        body=body,
        raw=ctx.text if ctx is not None else "",
        stream=body.get("stream") is True,
        include_usage=False,
        started=started,
        started_wall=started_wall,
        path=client_path(headers),
        caller=caller,
        answered=answered,
        holders=0,
    )
    trace_context(gw, headers, state)
    return state

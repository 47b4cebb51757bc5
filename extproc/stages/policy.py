"""The policy stage: once per request, at router level, before any provider is picked.

It recognises the endpoint, rejects bad input in the caller's dialect, parses
the body once and runs the pipeline's request steps on it (``extproc.pipeline``:
validate, route, identify the caller, admit quotas), then pins the request to
an Envoy route (dynamic metadata plus ``clear_route_cache``) whose priority
groups hold only providers that can serve it. The parsed request is left in
the request table for the provider stage.

A model call costs one message: its body, with the headers the steps read
sent along as attributes (``attributes``). Envoy does not send the request
headers themselves, so this stage never sees the others: the routes remove
credentials and identity headers, and the provider stage, which sees every
header on each attempt, applies the forwarding allow-list. Any other path
(unknown, wrong method, an unknown model's card) sends its headers only,
which this stage answers at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from .. import forwarding, model_list, model_list_anthropic, validation
from ..apis import ErrorStyle
from ..config import ForwardHeaders
from ..endpoints import Endpoint, Kind, classify, style_for_path
from ..errors import GatewayError, clip, internal, render
from ..gateway import Gateway
from ..headers import mutation, to_dict
from ..pipeline import Answer, RequestContext, request_steps, unknown_model
from ..pipeline.record import answered_by, answered_details, client_path, trace_context, unrouted
from ..quota.config import Identity
from ..state import Answered, RequestState
from . import ending

log = logging.getLogger(__name__)

ROUTE_HEADER = "x-sidegate-route"
# Where the body reply tells Envoy the route (and the request id the route sets).
METADATA_NAMESPACE = "sidegate"
ROUTE_KEY = "route"
REQUEST_ID_KEY = "rid"
ATTRIBUTES_KEY = "envoy.filters.http.ext_proc"
# How long the policy stage may take on one message when it has slow work
# (Envoy's max_message_timeout; its message_timeout is far shorter).
SLOW_WORK_TIMEOUT = 5.0
# Work still running after this long asks Envoy for SLOW_WORK_TIMEOUT: half of
# the 0.5 s message_timeout, so the request reaches Envoy well before it fires.
SLOW_WORK_AFTER = 0.25
REQUEST_ID = "x-request-id"
# Client headers that belong to the Anthropic API and reach Anthropic providers only.
ANTHROPIC_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")
# The client headers the request steps read (besides the configured identity
# headers), sent as attributes with the body. A step that reads another header
# adds it here, or it will not find it in ``RequestContext.headers``.
ATTRIBUTE_HEADERS = (
    "content-type",
    REQUEST_ID,
    "traceparent",
    "tracestate",
    *ANTHROPIC_CLIENT_HEADERS,
)
_PATH_ATTR = "request.path"  # with the query, as :path
_METHOD_ATTR = "request.method"


def _header_attr(name: str) -> str:
    return f"request.headers['{name}']"


def attributes(identity: Identity) -> list[str]:
    """The CEL attributes Envoy sends with the body: what ``RequestContext.headers`` holds.

    By name: Envoy 1.40 sends the whole ``request.headers`` map as the string
    "CelMap value".
    """
    names = dict.fromkeys((*ATTRIBUTE_HEADERS, identity.user_header, identity.tenant_header))
    return [_PATH_ATTR, _METHOD_ATTR, *(_header_attr(n) for n in names)]


def headers_from_attributes(req: pb.ProcessingRequest) -> dict[str, str]:
    """The request's headers as the attributes carry them (only those asked for)."""
    attrs = req.attributes.get(ATTRIBUTES_KEY)
    if attrs is None:
        return {}
    out: dict[str, str] = {}
    for key, value in attrs.fields.items():
        if value.WhichOneof("kind") != "string_value":
            continue
        if key == _PATH_ATTR:
            out[":path"] = value.string_value
        elif key == _METHOD_ATTR:
            out[":method"] = value.string_value
        elif key.startswith("request.headers['") and key.endswith("']"):
            out[key[17:-2]] = value.string_value
    return out


def immediate(
    status: int, body: bytes, details: str, content_type: str = "application/json"
) -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    ir = resp.immediate_response
    ir.status.code = status
    ir.body = body
    ir.details = details
    ir.headers.CopyFrom(mutation({"content-type": content_type}))
    return resp


def extend_timeout(seconds: float) -> pb.ProcessingResponse:
    """Ask Envoy to wait up to ``seconds`` for this message's reply (once per message)."""
    resp = pb.ProcessingResponse()
    resp.override_message_timeout.FromTimedelta(timedelta(seconds=seconds))
    return resp


def error_response(err: GatewayError, style: ErrorStyle) -> pb.ProcessingResponse:
    resp = immediate(err.status, render(err, style), f"sidegate_{err.code or 'error'}")
    if err.retry_after is not None:
        resp.immediate_response.headers.CopyFrom(
            mutation({"content-type": "application/json", "retry-after": str(err.retry_after)})
        )
    return resp


class PolicyStream:
    """One ext_proc stream of the policy stage, i.e. one HTTP request."""

    # The pipeline's request steps, in order (extproc.pipeline).
    steps = request_steps()

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.endpoint: Endpoint | None = None
        self.headers: dict[str, str] = {}
        self.state: RequestState | None = None
        # The request's record until it is routed (pipeline.record).
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.ctx: RequestContext | None = None
        self.answered: Answered | None = None
        self.record: RequestState | None = None  # made when an answer ends the request

    async def handle(self, req: pb.ProcessingRequest) -> AsyncIterator[pb.ProcessingResponse]:
        which = req.WhichOneof("request")
        try:
            if which == "request_headers":
                yield self._noted(self.on_headers(req.request_headers))
            elif which == "request_body":
                if self.endpoint is None:
                    # The one message of a model call (request headers SKIP).
                    refused = self.check_headers(headers_from_attributes(req), has_body=True)
                    if refused is not None:
                        yield self._noted(refused)
                        return
                async for resp in self.on_body(req.request_body):
                    yield resp
            else:
                log.warning("policy stage: unexpected %s message", which)
        except GatewayError as e:
            style = self.endpoint.style if self.endpoint else ErrorStyle.OPENAI
            self.answered = answered_by(e)
            yield error_response(e, style)

    def _noted(self, resp: pb.ProcessingResponse) -> pb.ProcessingResponse:
        """``resp``, with the request's record told if it answers the request."""
        if resp.HasField("immediate_response") and self.answered is None:
            ir = resp.immediate_response
            self.answered = answered_details(ir.status.code, ir.details)
        return resp

    def on_headers(self, msg: pb.HttpHeaders) -> pb.ProcessingResponse:
        refused = self.check_headers(to_dict(msg.headers), has_body=not msg.end_of_stream)
        if refused is not None:
            return refused
        resp = pb.ProcessingResponse()
        resp.request_headers.SetInParent()
        return resp

    def check_headers(self, h: dict[str, str], has_body: bool) -> pb.ProcessingResponse | None:
        """Recognise the endpoint from the headers: None to go on, or the answer."""
        self.headers = h
        path = h.get(":path", "/")
        try:
            self.endpoint = ep = classify(h.get(":method", "GET"), path)
        except GatewayError as e:
            return error_response(e, style_for_path(path))
        bad = bad_header(h)
        if bad is not None:
            raise bad
        if ep.kind in (Kind.LIST_MODELS, Kind.GET_MODEL) and ep.style is ErrorStyle.ANTHROPIC:
            return self._anthropic_models(ep)
        if ep.kind is Kind.LIST_MODELS:
            return immediate(200, self.gw.models_body, "sidegate_models")
        if ep.kind is Kind.GET_MODEL:
            card = self.gw.model_cards.get(ep.model_id or "")
            if card is None:
                raise _unknown_model(ep.model_id or "", self.gw)
            return immediate(200, model_list.card_body(card), "sidegate_models")
        content_type = h.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() != "application/json":
            raise GatewayError(
                415,
                "expected content-type application/json, got "
                + (clip(content_type) if content_type else "none"),
                code="unsupported_media_type",
            )
        limit = self.gw.config.limits.max_request_body_bytes
        length = h.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _too_large(int(length), limit)
        if not has_body:
            raise GatewayError(400, "request body is required", code="invalid_request")
        return None

    def _anthropic_models(self, ep: Endpoint) -> pb.ProcessingResponse:
        """What Envoy's direct responses did not answer (``model_list_anthropic``)."""
        if ep.kind is Kind.LIST_MODELS:
            return immediate(200, self.gw.anthropic_models_body, "sidegate_models")
        card = self.gw.anthropic_model_cards.get(ep.model_id or "")
        if card is None:
            raise _unknown_model(ep.model_id or "", self.gw)
        return immediate(200, model_list_anthropic.card_body(card), "sidegate_models")

    @property
    def _filter(self) -> forwarding.HeaderFilter:
        return header_filter(self.gw.config.forward_headers)

    async def on_body(self, msg: pb.HttpBody) -> AsyncIterator[pb.ProcessingResponse]:
        ep = self.endpoint
        assert ep is not None and ep.api is not None
        limit = self.gw.config.limits.max_request_body_bytes
        if len(msg.body) > limit:
            # Chunked uploads have no content-length to refuse them by earlier.
            raise _too_large(len(msg.body), limit)
        if self.gw.requests.full:
            raise GatewayError(
                503, "sidegate has too many requests in flight", code="overloaded", retry_after=1
            )
        # Parsed once, here: every step reads the same object (Needs.REQUEST_BODY).
        body, text = validation.parse(msg.body)
        ctx = RequestContext(self.gw, self.headers, ep.api, ep.style, msg.body, body, text)
        self.ctx = ctx
        extended = False
        for step in self.steps:
            if not step.suspends(ctx):
                answer = await step.run(ctx)
            else:
                run = asyncio.ensure_future(step.run(ctx))
                try:
                    done, _ = await asyncio.wait({run}, timeout=SLOW_WORK_AFTER)
                    if not done and not extended:
                        # Envoy gives each reply message_timeout (0.5 s): a slow
                        # Redis or a huge prompt to count would become a 504.
                        extended = True
                        yield extend_timeout(SLOW_WORK_TIMEOUT)
                    answer = await run
                except BaseException:
                    # Cancelled, or closed at the yield (GeneratorExit) when Envoy
                    # gives up on the stream: the step undoes what it began (see
                    # Step.run), e.g. admission gives its reservation back.
                    run.cancel()
                    raise
            if answer is not None:
                self.answered = answered_details(answer.status, answer.details)
                yield _answer(answer)
                return
        yield self._routed(ctx)

    def _routed(self, ctx: RequestContext) -> pb.ProcessingResponse:
        """Admit the request into the table and tell Envoy where it goes."""
        plan = ctx.plan
        assert plan is not None, "the route step pins every request it lets through"
        request_id = self.headers.get(REQUEST_ID, "")
        if not request_id or request_id in self.gw.requests:
            # The client reused an id that is still in flight: the two requests
            # must not share state.
            request_id = self.gw.new_request_id()
        body = ctx.body
        stream = body.get("stream") is True
        self.state = RequestState(
            id=request_id,
            api=ctx.api,
            plan=plan,
            requested_model=ctx.model,
            body=body,
            raw=ctx.text,
            stream=stream,
            include_usage=stream and validation.wants_usage(ctx.api, body),
            passthrough_headers={
                k: self.headers[k]
                for k in ANTHROPIC_CLIENT_HEADERS
                if k in self.headers and self._filter.forwarded(k)
            },
            reservation=ctx.reservation,
            started=self.started,
            started_wall=self.started_wall,
            path=client_path(self.headers),
            caller=ctx.caller,
        )
        trace_context(self.gw, self.headers, self.state)
        self.gw.requests.put(self.state)
        resp = pb.ProcessingResponse()
        # The route matches on this; it sets x-request-id from it. (The request
        # headers are not Envoy's to mutate here: they were never sent.)
        resp.dynamic_metadata.update(
            {METADATA_NAMESPACE: {ROUTE_KEY: plan.key, REQUEST_ID_KEY: request_id}}
        )
        common = resp.request_body.response
        # Envoy clears the route cache only for a reply with a header mutation,
        # even one it cannot apply. The routes remove this header in any case.
        common.header_mutation.CopyFrom(mutation({ROUTE_HEADER: plan.key}))
        common.clear_route_cache = True
        return resp

    @property
    def request_id(self) -> str:
        return self.state.id if self.state is not None else self.headers.get(REQUEST_ID, "")

    def fail(self, which: str | None) -> list[pb.ProcessingResponse]:
        """The answer after a step raised: a 500 in the caller's format.

        Always possible here: this stage runs before any response exists.
        """
        path = self.headers.get(":path", "/")
        style = self.endpoint.style if self.endpoint else style_for_path(path)
        self.answered = Answered(500, "internal_error")
        return [error_response(internal(self.request_id), style)]

    def end_wait(
        self, req: pb.ProcessingRequest, out: list[pb.ProcessingResponse]
    ) -> float | None:
        """How long the reply ``out`` may wait for ``ending`` (an answer in place of a response)."""
        return ending.ends(req, out)

    def ending(self) -> list[Awaitable[object]]:
        """A refusal or answer is about to go out: what it waits for (the durable audit record).

        The request's record is made now, so the listeners' view at the end
        and at completion is the same one.
        """
        if self.state is not None:
            return self.gw.requests.ending(self.state)
        self.record = self._unrouted()
        return self.gw.requests.ending(self.record)

    def _unrouted(self) -> RequestState:
        api = self.endpoint.api if self.endpoint else None
        return unrouted(
            self.gw, self.headers, api, self.ctx, self.answered, self.started, self.started_wall
        )

    def close(self) -> None:
        if self.state is not None:
            self.gw.requests.release(self.state)
        elif self.headers:
            # Answered here (or left before an answer): the listeners see it too.
            self.gw.requests.complete(self.record or self._unrouted())


@functools.lru_cache(maxsize=4)
def header_filter(config: ForwardHeaders) -> forwarding.HeaderFilter:
    # One per config in use; a reload brings a new ForwardHeaders.
    return forwarding.HeaderFilter(config.allow, config.deny)


def bad_header(headers: dict[str, str]) -> GatewayError | None:
    """The error for a header value that holds a control character, if one does."""
    bad = forwarding.bad_value(headers)
    if bad is None:
        return None
    return GatewayError(
        400,
        f"header {clip(bad, 60)} holds a control character (CR, LF, NUL or the like)",
        code="invalid_header",
    )


def _too_large(size: int, limit: int) -> GatewayError:
    return GatewayError(
        413,
        f"request body of {size} bytes exceeds the limit of {limit} bytes",
        code="request_too_large",
    )


def _unknown_model(model: str, gw: Gateway) -> GatewayError:
    return unknown_model(model, gw.config.routes)


def _answer(answer: Answer) -> pb.ProcessingResponse:
    resp = immediate(answer.status, answer.body, answer.details)
    if answer.headers:
        resp.immediate_response.headers.CopyFrom(
            mutation({"content-type": "application/json", **answer.headers})
        )
    return resp

"""The provider stage: an upstream filter, run once per attempt for that attempt's provider.

It translates the original request for this provider, injects this provider's
key, and translates the response back chunk by chunk. Envoy carries header
mutations from one attempt into the next, so every header this stage owns is
set or removed on every attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from ..apis import ClientApi, ErrorStyle
from ..config import Provider, ProviderApi
from ..errors import GatewayError, internal, render, render_stream_event
from ..gateway import Gateway
from ..headers import mutation, to_dict
from ..keys import MissingKey
from ..pipeline import Needs
from ..routing import model_for_attempt
from ..scrub import ACCOUNT_HEADERS, Scrubber
from ..state import Attempt, RequestState
from ..translate import AttemptContext, Exchange, exchange_for
from ..translate.exchange import Mode
from . import ending
from .policy import ANTHROPIC_CLIENT_HEADERS, REQUEST_ID, bad_header, error_response, header_filter

log = logging.getLogger(__name__)

ATTEMPT_ATTR = "upstream.request_attempt_count"

# Credentials any client or provider API uses; all are cleared, then this
# provider's is set, so neither the app's placeholder key nor an earlier
# attempt's key ever reaches a provider.
AUTH_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
# Headers that mean something to one provider API only (openai-organization
# and openai-project never get this far: see ``forwarding``).
OPENAI_ONLY = ("openai-beta",)
# The event that ends a stream for the app's SDK, which stops reading there
# (before the body's end): in the durable mode the chunk carrying it waits for
# the request's audit record (``stages.ending``).
STREAM_END: dict[ClientApi, tuple[bytes, ...]] = {
    ClientApi.OPENAI_CHAT: (b"data: [DONE]",),
    ClientApi.ANTHROPIC_MESSAGES: (b"event: message_stop",),
    ClientApi.OPENAI_RESPONSES: (
        b"event: response.completed",
        b"event: response.incomplete",
        b"event: response.failed",
    ),
}
# Body bytes per streamed_response message. Envoy's reference keeps these at
# 64 KiB or less; a larger one, or a burst of them, is what crosses the
# downstream buffer's high watermark in one go (see README, "Large responses").
MAX_CHUNK = 64 * 1024


def _attempt(req: pb.ProcessingRequest) -> int:
    attrs = req.attributes.get("envoy.filters.http.ext_proc")
    if attrs is None:
        return 1
    value = attrs.fields.get(ATTEMPT_ATTR)
    return int(value.number_value) if value is not None and value.number_value else 1


class ProviderStream:
    """One ext_proc stream of the provider stage, i.e. one attempt."""

    # It reads every response whole or chunk by chunk, whatever the pipeline
    # needs: keys are scrubbed from every response, and translated ones rewritten.
    needs = Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY | Needs.STREAM_CHUNKS

    def __init__(self, gateway: Gateway, provider: Provider) -> None:
        self.gw = gateway
        self.provider = provider
        self.state: RequestState | None = None
        self.exchange: Exchange | None = None
        self.model_name: str | None = None
        self.attempt: Attempt | None = None  # this attempt's entry in the request's record
        self._finished = False
        self._failed = False  # a message raised; the client got an error
        self._headers_out = False  # the response status went to the client
        self._body_out = False  # and some of its body
        self._scrub = Scrubber(())
        self._keep = 0  # bytes of the response kept for its record (audit.content)
        self._stream_end = False  # this message's reply carries the stream's last event

    def handle(self, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        which = req.WhichOneof("request")
        if self._failed:
            # The client already has its error and the end of its response.
            return [_trailers()] if which == "response_trailers" else []
        out = self._dispatch(req, which)
        if which == "response_headers":
            self._headers_out = True
        elif which == "response_body" and out:
            sent = out[0].response_body.response.body_mutation.streamed_response.body
            self._body_out |= bool(sent)
        return out

    def _dispatch(
        self, req: pb.ProcessingRequest, which: str | None
    ) -> list[pb.ProcessingResponse]:
        if which == "response_body":
            return self.on_response_body(req.response_body)
        if which == "response_headers":
            return [self.on_response_headers(req.response_headers)]
        if which == "request_headers":
            return [self.on_request_headers(req)]
        if which == "response_trailers":
            return self.on_response_trailers()
        log.warning("provider stage: unexpected %s message", which)
        return []

    @property
    def request_id(self) -> str:
        return self.state.id if self.state is not None else ""

    def _ends_stream(self, out: bytes) -> bool:
        exchange, state = self.exchange, self.state
        if exchange is None or state is None or exchange.mode is not Mode.STREAM or self._finished:
            return False
        markers = STREAM_END.get(state.api, ()) if state.api is not None else ()
        return any(marker in out for marker in markers)

    def end_wait(self, req: pb.ProcessingRequest, out: list[pb.ProcessingResponse]) -> float | None:
        """How long the reply ``out`` may wait for ``ending``, if it ends the app's response."""
        limit = ending.ends(req, out)
        if limit is None and self._stream_end:
            limit = ending.STREAM_WAIT
        self._stream_end = False
        return limit

    def ending(self) -> list[Awaitable[object]]:
        """This reply ends the attempt's response: what it waits for (the durable audit record).

        Only when the app surely gets it: Envoy may still retry a response of
        a retriable status (it decides after this stage has seen it whole),
        and such a request is recorded when it completes instead.
        """
        # The bootstrap imports this module: its retry policy is read late.
        from ..envoy.bootstrap import RETRIABLE_STATUS

        state, exchange = self.state, self.exchange
        if state is None or state.plan is None:
            return []
        if (
            self._headers_out
            and exchange is not None
            and exchange.status in RETRIABLE_STATUS
            and len(state.attempts) <= state.plan.retries
        ):
            return []
        return self.gw.requests.ending(state)

    def fail(self, which: str | None) -> list[pb.ProcessingResponse]:
        """The answer after handling ``which`` raised: the caller's error, then the end.

        Before the response headers went out, a local reply (Envoy sends it in
        place of the provider's response; it is not retried). After, the status
        is spent: the error goes in the body (an SSE error event on a stream,
        an error object if no byte went out yet) and the body ends there.
        """
        self._failed = True
        api = self.state.api if self.state is not None else None
        style = api.error_style if api is not None else ErrorStyle.OPENAI
        err = internal(self.request_id)
        if not self._headers_out:
            return [error_response(err, style)]
        self._finish_attempt()
        if self.state is not None:
            # The provider's 2xx went out, but the client got an error after it:
            # what the request completes with (quotas, logs) is that error.
            self.state.status = err.status
        if self.exchange is not None and self.exchange.mode is Mode.STREAM:
            body = render_stream_event(err, style)
        elif not self._body_out:
            body = render(err, style)
        else:
            body = b""  # half a JSON body went out: nothing appended can mend it
        if which == "response_trailers":
            return [*_streamed(body, False), _trailers()]
        return _streamed(body, True)

    # -- request -----------------------------------------------------------------

    def on_request_headers(self, req: pb.ProcessingRequest) -> pb.ProcessingResponse:
        headers = to_dict(req.request_headers.headers)
        state = self.gw.requests.get(headers.get(REQUEST_ID, ""))
        if state is None:
            # The policy stage did not see this request: never forward it unprocessed.
            return _internal("a request reached a provider without passing the policy stage")
        self.state = state
        self.gw.requests.attach(state)
        assert state.plan is not None and state.api is not None, "only routed requests are held"
        model = model_for_attempt(
            state.plan, self.gw.config.models, self.provider.name, _attempt(req)
        )
        self.attempt = Attempt(
            provider=self.provider.name,
            region=self.provider.region,
            model=model.name if model is not None else "",
            model_id=model.id if model is not None else "",
            started=time.monotonic(),
        )
        state.attempts.append(self.attempt)
        if model is None:
            return error_response(
                GatewayError(
                    500, f"provider {self.provider.name!r} is not a candidate for this request"
                ),
                state.api.error_style,
            )
        self.model_name = model.name
        # The policy stage saw only the headers its steps read: the app's
        # others meet the forwarding allow-list here.
        bad = bad_header(headers)
        if bad is not None:
            return error_response(bad, state.api.error_style)
        self.exchange = exchange_for(
            AttemptContext(
                client_api=state.api,
                body=state.body,
                raw=state.raw,
                provider=self.provider,
                model=model,
                stream=state.stream,
                include_usage=state.include_usage,
                defaults=self.gw.config.defaults,
                response_meta=Needs.RESPONSE_META in self.gw.record_needs,
                capture_text=_capture_text(self.gw, state.plan.route),
            )
        )
        return self._replace_request(state, self.exchange, headers)

    def _auth_headers(self, state: RequestState) -> dict[str, str]:
        ring = self.gw.keys.get(self.provider.name)
        if ring is None:  # removed by a config reload while this request was in flight
            raise MissingKey(f"provider {self.provider.name!r} is no longer configured")
        key = ring.next().value
        if self.provider.api is ProviderApi.ANTHROPIC:
            return {
                "x-api-key": key,
                "anthropic-version": state.passthrough_headers.get(
                    "anthropic-version", self.provider.anthropic_version
                ),
            }
        return {"authorization": f"Bearer {key}"}

    def _replace_request(
        self, state: RequestState, exchange: Exchange, headers: dict[str, str]
    ) -> pb.ProcessingResponse:
        """This attempt's request, whole, in the reply to its headers (one message an attempt).

        CONTINUE_AND_REPLACE: Envoy drops the body it holds (the client's, or
        its replay on a retry) and sends ours; the body comes from the request
        table, parsed once by the policy stage. Envoy removes content-length
        with the replacement; the upstream buffer filter after this stage sets
        it again (envoy_bootstrap).
        """
        assert state.api is not None
        style = state.api.error_style
        try:
            outbound = exchange.request()
            auth = self._auth_headers(state)
        except GatewayError as e:
            return error_response(e, style)
        except MissingKey as e:
            log.error("%s", e)
            return error_response(
                GatewayError(
                    500, f"provider {self.provider.name!r} has no usable key; see the gateway log"
                ),
                style,
            )
        set_headers = {
            ":path": outbound.path,
            "content-type": "application/json",
            # Compressed bodies could not be translated chunk by chunk.
            "accept-encoding": "identity",
            **auth,
        }
        remove = [h for h in AUTH_HEADERS if h not in set_headers]
        if self.provider.api is ProviderApi.ANTHROPIC:
            if "anthropic-beta" in state.passthrough_headers:
                set_headers["anthropic-beta"] = state.passthrough_headers["anthropic-beta"]
            else:
                remove.append("anthropic-beta")
            remove.extend(OPENAI_ONLY)
        else:
            remove.extend(ANTHROPIC_CLIENT_HEADERS)
        tracing = self.gw.telemetry.tracing
        if tracing is not None:
            # This attempt's span is the provider's parent. Set on every attempt,
            # and tracestate removed when the client sent none: a mutation of
            # an earlier attempt would leak into this one.
            set_headers.update(tracing.attempt_headers(state, self.attempt))
            if "tracestate" not in set_headers:
                remove.append("tracestate")
        unlisted = header_filter(self.gw.config.forward_headers).removals(headers)
        remove.extend(n for n in unlisted if n not in set_headers and n not in remove)
        resp = pb.ProcessingResponse()
        common = resp.request_headers.response
        common.status = pb.CommonResponse.CONTINUE_AND_REPLACE
        common.header_mutation.CopyFrom(mutation(set_headers, remove))
        common.body_mutation.body = outbound.body
        return resp

    # -- response ----------------------------------------------------------------

    def on_response_headers(self, msg: pb.HttpHeaders) -> pb.ProcessingResponse:
        headers = to_dict(msg.headers)
        resp = pb.ProcessingResponse()
        resp.response_headers.SetInParent()
        # Every key sidegate holds now, not only the one this attempt used: a
        # provider can echo any key it ever got from this sidecar.
        self._scrub = Scrubber(k for ring in self.gw.keys.values() for k in ring.values())
        if self.exchange is not None:
            self.exchange.scrub_error = self._scrub.scrub
        remove: list[str] = list(ACCOUNT_HEADERS)
        if self.exchange is None:
            resp.response_headers.response.header_mutation.CopyFrom(mutation({}, remove))
            return resp
        status = int(headers.get(":status", "0") or 0)
        self._keep_content()
        attempt = self.attempt
        if attempt is not None:
            attempt.responded = time.monotonic()
            attempt.status = status
            if status >= 400:
                attempt.retry_after = headers.get("retry-after")
        length = headers.get("content-length", "")
        plan = self.exchange.begin_response(
            status,
            headers.get("content-type", ""),
            max_bytes=self.gw.config.limits.max_response_bytes,
            content_length=int(length) if length.isdigit() else None,
        )
        set_headers = {
            "x-sidegate-provider": self.provider.name,
            "x-sidegate-model": self.model_name or "",
        }
        if plan.content_type:
            set_headers["content-type"] = plan.content_type
        if plan.status is not None:
            set_headers[":status"] = str(plan.status)
        if plan.rewrites:
            remove += ["content-length", "content-encoding"]
        set_headers.update(self._scrubbed_headers(headers, set_headers, remove))
        resp.response_headers.response.header_mutation.CopyFrom(mutation(set_headers, remove))
        if msg.end_of_stream:
            # No body will follow; an error still needs one in the caller's format.
            self._finish_attempt()
        return resp

    def _scrubbed_headers(
        self, headers: dict[str, str], replaced: dict[str, str], removed: list[str]
    ) -> dict[str, str]:
        """The provider's headers whose values carry a key, with the key overwritten.

        Envoy's own headers cannot be rewritten by a processor; no provider
        sets them.
        """
        out: dict[str, str] = {}
        for name, value in headers.items():
            if name[0] == ":" or name in replaced or name in removed or name.startswith("x-envoy-"):
                continue
            raw = value.encode()
            clean = self._scrub.scrub(raw)
            if clean != raw:
                out[name] = clean.decode(errors="replace")
        return out

    def on_response_body(self, msg: pb.HttpBody) -> list[pb.ProcessingResponse]:
        eos = msg.end_of_stream
        out = msg.body if self.exchange is None else self.exchange.feed(msg.body)
        if eos and self.exchange is not None:
            out += self.exchange.finish()
            self._finish_attempt()
        out = self._scrub.feed(out)
        if eos:
            out += self._scrub.flush()
        if self._keep:
            self._kept(out)
        attempt = self.attempt
        if out and attempt is not None and attempt.first_chunk is None:
            attempt.first_chunk = time.monotonic()
        if not eos and self._ends_stream(out):
            # The app's SDK is done at this event: the request's outcome is known.
            self._finish_attempt()
            self._stream_end = True
        if not out and not eos:
            return []  # full duplex: nothing to send yet
        return _streamed(out, eos)

    def on_response_trailers(self) -> list[pb.ProcessingResponse]:
        tail = b""
        if self.exchange is not None:
            tail = self.exchange.finish()
            self._finish_attempt()
        tail = self._scrub.feed(tail) + self._scrub.flush()
        if self._keep:
            self._kept(tail)
        out = _streamed(tail, False) if tail else []
        out.append(_trailers())
        return out

    def _keep_content(self) -> None:
        """Keep this attempt's response for the request's record, if its route records content."""
        state = self.state
        if state is None or state.plan is None:
            return
        self._keep = self.gw.audit.content_limit(state.plan.route)
        if self._keep:
            state.response_content = bytearray()
            state.response_bytes = 0

    def _kept(self, out: bytes) -> None:
        state = self.state
        if state is None or state.response_content is None:
            return
        state.response_bytes += len(out)
        room = self._keep - len(state.response_content)
        if room > 0:
            state.response_content += out[:room]

    def close(self) -> None:
        if self.state is None:
            return
        # A client that stops reading at [DONE] can make Envoy end this stream
        # before the provider's last chunk: keep what the attempt did see.
        if self.exchange is not None and self.exchange.status:
            self._finish_attempt()
        attempt = self.attempt
        if attempt is not None and attempt.ended is None:
            attempt.ended = now = time.monotonic()
            if attempt.status is None:
                # No response: the per-try timeout fired, or the connection failed.
                late = now - attempt.started >= self.gw.config.timeouts.first_byte * 0.99
                attempt.error = "timeout" if late else "reset"
        self.gw.requests.release(self.state)

    def _finish_attempt(self) -> None:
        state, exchange = self.state, self.exchange
        if state is None or exchange is None or self._finished:
            return
        self._finished = True
        attempt = self.attempt
        if attempt is not None:
            attempt.ended = time.monotonic()
            attempt.status = exchange.status  # a body over the bound turned into a 502
        if (
            state.status is not None
            and 200 <= state.status < 300
            and not 200 <= exchange.status < 300
        ):
            return  # a failed attempt never overwrites one that succeeded
        state.provider = self.provider.name
        state.model = self.model_name
        state.status = exchange.status
        if exchange.usage is not None:
            state.usage = exchange.usage
        state.response_id = exchange.response_id
        state.response_model = exchange.response_model
        state.finish_reasons = tuple(exchange.finish_reasons)
        if exchange.text is not None:
            # A provider can echo a key: the text is scrubbed as the client's bytes are.
            text = "".join(exchange.text).encode()
            state.output_text = self._scrub.scrub(text).decode(errors="replace")
        if attempt is not None and exchange.mode is Mode.STREAM:
            state.first_token = attempt.first_chunk


def _capture_text(gw: Gateway, route: str) -> int:
    """Characters of the answer a listener records (0: none; the route records no content)."""
    content = gw.config.telemetry.content
    if gw.telemetry.tracing is None or not content.captures(route):
        return 0
    return content.max_chars


def _internal(message: str) -> pb.ProcessingResponse:
    # No request state means no known caller format: OpenAI's is the default.
    return error_response(
        GatewayError(500, f"sidegate: {message}", code="internal"), ErrorStyle.OPENAI
    )


def _trailers() -> pb.ProcessingResponse:
    resp = pb.ProcessingResponse()
    resp.response_trailers.SetInParent()
    return resp


def _streamed(body: bytes, eos: bool) -> list[pb.ProcessingResponse]:
    """``body`` as streamed_response messages of at most MAX_CHUNK bytes (FULL_DUPLEX is N:M)."""
    pieces = [body[i : i + MAX_CHUNK] for i in range(0, len(body), MAX_CHUNK)] or [b""]
    out = []
    for n, piece in enumerate(pieces):
        resp = pb.ProcessingResponse()
        streamed = resp.response_body.response.body_mutation.streamed_response
        streamed.body = piece
        streamed.end_of_stream = eos and n == len(pieces) - 1
        out.append(resp)
    return out

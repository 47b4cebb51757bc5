"""OpenAI Responses client → OpenAI-style provider: passed through, or translated to chat.

A provider that serves the Responses API itself (``responses: native``) gets
the client's body with only the model id changed, streams and state included;
usage is read from the ``usage`` of the response (the JSON body, or the
``response.completed`` / ``.incomplete`` / ``.failed`` event, which carries the
whole response: such streams are parsed event by event, each within
``limits.max_response_bytes``).

A chat-completions-only provider (``responses: chat``) gets the stateless
subset translated (``responses_chat``), and its answer comes back as a
Responses object or event stream (``responses_stream``).
"""

from __future__ import annotations

import time
from typing import Any

from ..rawjson import set_fields
from ..sse import Event
from ..usage import Usage, as_int
from . import openai_openai
from . import responses_chat as rc
from .exchange import AttemptContext, Exchange, Outbound, dumps, read_meta
from .responses_stream import ResponsesStream, parse_chunk

# The stream events whose ``response`` is final, usage included.
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def usage_from(u: object) -> Usage | None:
    """Responses usage → Usage. ``input_tokens`` includes cached ones, as Usage wants."""
    if not isinstance(u, dict):
        return None
    details = u.get("input_tokens_details")
    out_details = u.get("output_tokens_details")
    return Usage(
        input_tokens=as_int(u.get("input_tokens")),
        output_tokens=as_int(u.get("output_tokens")),
        cache_read_tokens=as_int(details.get("cached_tokens")) if isinstance(details, dict) else 0,
        cache_creation_tokens=(
            as_int(details.get("cache_write_tokens")) if isinstance(details, dict) else 0
        ),
        reasoning_tokens=(
            as_int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0
        ),
    )


def outcome(response: dict[str, Any]) -> list[str] | None:
    """A Responses object's finish reason for the request record: why it is incomplete, or
    its status."""
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    found = reason if isinstance(reason, str) and reason else response.get("status")
    return [found] if isinstance(found, str) and found else None


def chat_reasons(chunk: dict[str, Any]) -> list[str]:
    choices = chunk.get("choices")
    found = (
        (c.get("finish_reason") for c in choices if isinstance(c, dict))
        if isinstance(choices, list)
        else ()
    )
    return [r for r in found if isinstance(r, str) and r]


class ResponsesToOpenAI(Exchange):
    """Pass-through to a provider that serves ``/responses``."""

    passthrough_json = True
    # Not a pass-through stream in the base class's sense: usage rides in the
    # last event, which repeats the whole output and may be large, so every
    # event is held whole (bounded) and forwarded as it came.
    passthrough_stream = False

    def request(self) -> Outbound:
        ctx = self.ctx
        return Outbound(
            path=ctx.provider.base_path + "/responses",
            body=set_fields(ctx.raw, {"model": ctx.model.id}).encode(),
        )

    def json_response(self, body: dict[str, Any]) -> bytes:
        self.usage = usage_from(body.get("usage"))
        read_meta(self, body, outcome(body))
        return b""

    def stream_event(self, event: Event) -> bytes:
        kind = event.event
        if kind is None and '"response.' in event.data[:200]:
            kind = (parse_chunk(event.data) or {}).get("type")
        if kind in FINAL_EVENTS:
            data = parse_chunk(event.data) or {}
            response = data.get("response")
            if isinstance(response, dict):
                self.usage = usage_from(response.get("usage")) or self.usage
                read_meta(self, response, outcome(response))
        return event.raw

    def stream_end(self, pending: bytes) -> bytes:
        return pending

    def error(self, status: int, body: bytes) -> bytes:
        return openai_openai.error_body(status, body, self.ctx.provider.name)


class ResponsesToChat(Exchange):
    """Translation to a provider that answers chat completions only."""

    def __init__(self, ctx: AttemptContext) -> None:
        super().__init__(ctx)
        self.created = int(time.time())
        self._stream = ResponsesStream(ctx.body, self.created)

    def request(self) -> Outbound:
        ctx = self.ctx
        chat, _ = rc.translate_request(ctx.body, ctx.model.id, ctx.provider.name)
        return Outbound(path=ctx.provider.base_path + "/chat/completions", body=dumps(chat))

    def json_response(self, body: dict[str, Any]) -> bytes:
        self.usage = openai_openai.usage_from(body)
        read_meta(self, body, chat_reasons(body))
        return dumps(rc.translate_response(body, self.ctx.body, self.usage, self.created))

    def stream_event(self, event: Event) -> bytes:
        self._stream.limit = self.max_bytes  # set by begin_response
        if event.is_comment:
            return b"" if self._stream.done else event.raw
        if event.data.strip() == "[DONE]":
            return self._stream.finish()
        chunk = parse_chunk(event.data)
        if chunk is None:
            return b""
        usage = openai_openai.usage_from(chunk)
        if usage is not None:
            self.usage = self._stream.usage = usage
        if self.response_id is None:
            read_meta(self, chunk)
        reasons = chat_reasons(chunk)
        if reasons:
            self.finish_reasons = reasons
        return self._stream.chunk(chunk)

    def stream_end(self, pending: bytes) -> bytes:
        return self._stream.truncated()

    def error(self, status: int, body: bytes) -> bytes:
        return openai_openai.error_body(status, body, self.ctx.provider.name)

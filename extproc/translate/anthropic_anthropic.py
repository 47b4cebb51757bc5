"""Anthropic client → Anthropic provider: Messages passed through.

Only the model id changes. Usage is read from the JSON body, or on streams from
``message_start`` and the cumulative ``message_delta`` counts.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import anthropic_error_body, anthropic_type
from ..rawjson import set_fields
from ..sse import Event
from ..usage import Usage, as_int
from .exchange import Exchange, Outbound, dumps, error_text, read_meta


def usage_from(u: object, into: Usage | None = None) -> Usage | None:
    """Anthropic usage → Usage. ``message_delta`` counts are cumulative: set, never add."""
    if not isinstance(u, dict):
        return into
    usage = into or Usage()
    read = as_int(u.get("cache_read_input_tokens"))
    created = as_int(u.get("cache_creation_input_tokens"))
    if "input_tokens" in u or "cache_read_input_tokens" in u:
        usage.cache_read_tokens = read
        usage.cache_creation_tokens = created
        usage.input_tokens = as_int(u.get("input_tokens")) + read + created
    if "output_tokens" in u:
        usage.output_tokens = as_int(u.get("output_tokens"))
    return usage


def stop_reasons(holder: object) -> list[str] | None:
    """``[stop_reason]`` of a message or a message_delta's delta, if it names one."""
    reason = holder.get("stop_reason") if isinstance(holder, dict) else None
    return [reason[:128]] if isinstance(reason, str) and reason else None


def error_body(status: int, body: bytes, provider: str) -> bytes:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("type") == "error":
        return body
    message = f"provider {provider!r} answered {status}: {error_text(body) or 'no body'}"
    return dumps(anthropic_error_body(message, anthropic_type(status)))


class AnthropicToAnthropic(Exchange):
    passthrough_json = True
    passthrough_stream = True

    def request(self) -> Outbound:
        ctx = self.ctx
        return Outbound(
            path=ctx.provider.base_path + "/v1/messages",
            body=set_fields(ctx.raw, {"model": ctx.model.id}).encode(),
        )

    def json_response(self, body: dict[str, Any]) -> bytes:
        self.usage = usage_from(body.get("usage"))
        read_meta(self, body, stop_reasons(body))
        if self.text is not None:
            for block in body.get("content") or []:
                if isinstance(block, dict) and block.get("type") == "text":
                    self.keep_text(block.get("text"))
        return b""

    def stream_event(self, event: Event) -> bytes:
        if self.text is not None and event.event == "content_block_delta":
            try:
                data = json.loads(event.data)
            except ValueError:
                data = None
            delta = data.get("delta") if isinstance(data, dict) else None
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                self.keep_text(delta.get("text"))
        if event.event in ("message_start", "message_delta"):
            try:
                data = json.loads(event.data)
            except ValueError:
                return event.raw
            if isinstance(data, dict):
                holder = data.get("message") if event.event == "message_start" else data
                if isinstance(holder, dict):
                    self.usage = usage_from(holder.get("usage"), self.usage)
                    if event.event == "message_start":
                        read_meta(self, holder)
                    elif reasons := stop_reasons(holder.get("delta")):
                        self.finish_reasons = reasons
        return event.raw

    def stream_end(self, pending: bytes) -> bytes:
        return pending  # pass-through: an unterminated last event still reaches the client

    def error(self, status: int, body: bytes) -> bytes:
        return error_body(status, body, self.ctx.provider.name)

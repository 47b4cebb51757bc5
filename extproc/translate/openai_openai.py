"""OpenAI client → OpenAI-compatible provider: chat completions and embeddings.

Everything passes through byte for byte except the model id (the provider's),
and, on streams, ``stream_options.include_usage``, which sidegate forces so it
can count tokens; the extra usage chunk is dropped again when the client did
not ask for it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..apis import ClientApi
from ..errors import openai_error_body, openai_type
from ..rawjson import set_fields
from ..sse import Event
from ..usage import Usage, as_int
from .exchange import MAX_REASONS, Exchange, Outbound, dumps, error_text, read_meta

_NULL_USAGE = re.compile(rb'"usage"\s*:\s*null')
_FINISH_REASON = re.compile(rb'"finish_reason"\s*:\s*"([^"\\]{1,64})"')


def request_fields(body: dict[str, Any], model_id: str, *, stream: bool) -> dict[str, Any]:
    """The top-level fields to overwrite in the client's body."""
    fields: dict[str, Any] = {"model": model_id}
    if stream:
        options = body.get("stream_options")
        merged = dict(options) if isinstance(options, dict) else {}
        if merged.get("include_usage") is not True:
            merged["include_usage"] = True
            fields["stream_options"] = merged
    return fields


def usage_from(body: dict[str, Any]) -> Usage | None:
    u = body.get("usage")
    if not isinstance(u, dict):
        return None
    prompt = u.get("prompt_tokens_details")
    completion = u.get("completion_tokens_details")
    return Usage(
        input_tokens=as_int(u.get("prompt_tokens")),
        output_tokens=as_int(u.get("completion_tokens")),
        cache_read_tokens=as_int(prompt.get("cached_tokens")) if isinstance(prompt, dict) else 0,
        reasoning_tokens=(
            as_int(completion.get("reasoning_tokens")) if isinstance(completion, dict) else 0
        ),
    )


def error_body(status: int, body: bytes, provider: str) -> bytes:
    """OpenAI-style errors pass as they are; anything else is wrapped in one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return body
    message = f"provider {provider!r} answered {status}: {error_text(body) or 'no body'}"
    return dumps(openai_error_body(message, openai_type(status), code="upstream_error"))


class OpenAIToOpenAI(Exchange):
    passthrough_json = True
    passthrough_stream = True

    def request(self) -> Outbound:
        ctx = self.ctx
        suffix = (
            "/embeddings" if ctx.client_api is ClientApi.OPENAI_EMBEDDINGS else "/chat/completions"
        )
        fields = request_fields(ctx.body, ctx.model.id, stream=ctx.stream)
        return Outbound(
            path=ctx.provider.base_path + suffix,
            body=set_fields(ctx.raw, fields).encode(),
        )

    def json_response(self, body: dict[str, Any]) -> bytes:
        self.usage = usage_from(body)
        choices = body.get("choices")
        reasons: list[str] | None = None
        if isinstance(choices, list):
            found = (c.get("finish_reason") for c in choices if isinstance(c, dict))
            reasons = [r for r in found if isinstance(r, str)]
        read_meta(self, body, reasons)
        if self.text is not None and isinstance(choices, list) and choices:
            first = choices[0]
            message = first.get("message") if isinstance(first, dict) else None
            if isinstance(message, dict):
                self.keep_text(message.get("content"))
        return b""

    def stream_event(self, event: Event) -> bytes:
        raw = event.raw
        if self.ctx.response_meta and b'"finish_reason"' in raw:
            # Only the chunk that ends a choice names a reason (null elsewhere).
            for m in _FINISH_REASON.finditer(raw):
                if len(self.finish_reasons) < MAX_REASONS:
                    self.finish_reasons.append(m.group(1).decode())
        if self.text is not None and b'"content"' in raw:
            self._keep_delta(event)
        if b'"usage"' not in raw or _NULL_USAGE.search(raw):
            return raw
        try:
            chunk = json.loads(event.data)
        except ValueError:
            return raw
        if isinstance(chunk, dict):
            usage = usage_from(chunk)
            if usage is not None:
                self.usage = usage
                read_meta(self, chunk)
                if not self.ctx.include_usage and not chunk.get("choices"):
                    return b""
        return raw

    def _keep_delta(self, event: Event) -> None:
        try:
            chunk = json.loads(event.data)
        except ValueError:
            return
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta")
            if isinstance(delta, dict):
                self.keep_text(delta.get("content"))

    def stream_end(self, pending: bytes) -> bytes:
        return pending  # pass-through: an unterminated last event still reaches the client

    def error(self, status: int, body: bytes) -> bytes:
        return error_body(status, body, self.ctx.provider.name)

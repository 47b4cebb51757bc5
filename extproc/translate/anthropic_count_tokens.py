"""Anthropic count_tokens client → Anthropic provider: passed through to its count_tokens.

Only the model id changes. The answer is not a model call: it reports no usage,
so nothing is billed or settled against a quota. Other providers have no
count_tokens endpoint; the policy stage estimates for them
(``pipeline.count_tokens``).
"""

from __future__ import annotations

from typing import Any

from ..rawjson import set_fields
from ..sse import Event
from .anthropic_anthropic import error_body
from .exchange import Exchange, Outbound


class AnthropicCountTokens(Exchange):
    passthrough_json = True
    passthrough_stream = True

    def request(self) -> Outbound:
        ctx = self.ctx
        return Outbound(
            path=ctx.provider.base_path + "/v1/messages/count_tokens",
            body=set_fields(ctx.raw, {"model": ctx.model.id}).encode(),
        )

    def json_response(self, body: dict[str, Any]) -> bytes:
        return b""  # input_tokens here is an answer, not usage

    def stream_event(self, event: Event) -> bytes:
        return event.raw  # count_tokens never streams; whatever comes is passed on

    def stream_end(self, pending: bytes) -> bytes:
        return pending

    def error(self, status: int, body: bytes) -> bytes:
        return error_body(status, body, self.ctx.provider.name)

"""OpenAI Responses client → Anthropic Messages provider, by way of chat completions.

The stateless subset of a Responses request is first the chat completions
request ``responses_chat`` makes of it, then the Anthropic request
``openai_anthropic`` makes of that, so both directions share one set of rules
(and what chat → Anthropic learns, Responses clients get too). Errors name the
Responses field: a chat message index is mapped back to the input item it came
from. The answer travels the other way: Anthropic message → chat completion →
Responses object; Anthropic events → chat chunks → Responses events.

``text.format`` becomes chat's ``response_format``, which the chat → Anthropic
translation takes or refuses with a 400 naming it; ``reasoning`` becomes
``reasoning_effort``, likewise.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..errors import GatewayError
from ..sse import Event
from . import openai_anthropic
from . import responses_chat as rc
from .anthropic_anthropic import stop_reasons
from .exchange import AttemptContext, Exchange, Outbound, dumps, read_meta
from .responses_stream import ResponsesStream, parse_chunk

_MESSAGE_PARAM = re.compile(r"messages\[(\d+)\]")


def translate_request(
    body: dict[str, Any], model_id: str, provider: str, max_tokens: int
) -> dict[str, Any]:
    """A Responses body → an Anthropic Messages body."""
    chat, sources = rc.translate_request(body, model_id, provider)
    chat.pop("stream_options", None)
    try:
        return openai_anthropic.translate_request(chat, model_id, max_tokens)
    except GatewayError as e:
        raise _in_responses_terms(e, sources) from None


def _in_responses_terms(err: GatewayError, sources: list[str]) -> GatewayError:
    """``messages[3].content`` → ``input[2].content``; chat's field names → Responses'."""

    def source(m: re.Match[str]) -> str:
        i = int(m.group(1))
        return sources[i] if i < len(sources) else m.group(0)

    renames = {
        "max_tokens": "max_output_tokens",
        "response_format": "text.format",
        "reasoning_effort": "reasoning.effort",
    }
    param = err.param
    if param is not None:
        param = renames.get(param, _MESSAGE_PARAM.sub(source, param))
    message = err.message
    for chat_name, name in renames.items():
        message = message.replace(chat_name, name)
    return GatewayError(err.status, message, code=err.code, param=param)


def chat_chunks(sse: bytes) -> list[dict[str, Any] | None]:
    """The chunks in chat SSE that ``openai_anthropic`` wrote (None: ``[DONE]``).

    Its output is regular: one ``data:`` line an event, JSON without raw line
    breaks; comments (pings) carry nothing to translate.
    """
    out: list[dict[str, Any] | None] = []
    for block in sse.split(b"\n\n"):
        if not block.startswith(b"data: "):
            continue
        payload = block[6:].decode("utf-8", "replace")
        out.append(None if payload == "[DONE]" else parse_chunk(payload))
    return out


class ResponsesToAnthropic(Exchange):
    def __init__(self, ctx: AttemptContext) -> None:
        super().__init__(ctx)
        self.created = int(time.time())
        self._chat = openai_anthropic.StreamTranslator(include_usage=True, created=self.created)
        self._out = ResponsesStream(ctx.body, self.created)

    def request(self) -> Outbound:
        ctx = self.ctx
        body = translate_request(
            ctx.body, ctx.model.id, ctx.provider.name, ctx.defaults.anthropic_max_tokens
        )
        return Outbound(path=ctx.provider.base_path + "/v1/messages", body=dumps(body))

    def json_response(self, body: dict[str, Any]) -> bytes:
        completion, self.usage = openai_anthropic.translate_response(body, self.created)
        read_meta(self, body, stop_reasons(body))
        return dumps(rc.translate_response(completion, self.ctx.body, self.usage, self.created))

    def stream_event(self, event: Event) -> bytes:
        self._out.limit = self.max_bytes  # set by begin_response
        if not event.data:
            return b""
        try:
            data = json.loads(event.data)
        except ValueError:
            return b""
        if not isinstance(data, dict):
            return b""
        name = event.event or data.get("type")
        if name == "ping":
            # Keeps idle timers of proxies in between from firing.
            return b"" if self._out.done else b": ping\n\n"
        chat = self._chat.event(name, data)
        self.usage = self._out.usage = self._chat.usage
        if name == "message_start" and isinstance(data.get("message"), dict):
            read_meta(self, data["message"])
        elif name == "message_delta" and (reasons := stop_reasons(data.get("delta"))):
            self.finish_reasons = reasons
        out = b""
        for chunk in chat_chunks(chat):
            out += self._out.finish() if chunk is None else self._out.chunk(chunk)
        return out

    def stream_end(self, pending: bytes) -> bytes:
        return self._out.truncated()

    def error(self, status: int, body: bytes) -> bytes:
        return openai_anthropic.translate_error(status, body, self.ctx.provider.name)

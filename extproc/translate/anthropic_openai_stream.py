"""OpenAI chat completions stream → Anthropic Messages stream, chunk by chunk.

An OpenAI stream is flat: each chunk's delta may carry text, reasoning or
fragments of numbered tool calls, and the finish reason and usage come last.
Anthropic's is nested: ``message_start``, then one content block at a time
(``content_block_start``, its deltas, ``content_block_stop``), then
``message_delta`` with the stop reason and usage, and ``message_stop``. This
translator keeps one block open and starts the next when the kind of delta
changes; each OpenAI tool call index becomes a ``tool_use`` block whose
argument fragments go out as ``input_json_delta``.

The mapping tables shared with the whole-body translation
(``anthropic_openai``) live here: that module imports this one.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import anthropic_error_body
from ..usage import Usage, as_int
from .exchange import dumps

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# OpenAI error `type`s in a stream → Anthropic's; anything else is an api_error.
_ERROR_TYPES = {
    "invalid_request_error": "invalid_request_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
    "rate_limit_error": "rate_limit_error",
    "rate_limit_exceeded": "rate_limit_error",
    "insufficient_quota": "rate_limit_error",
    "overloaded_error": "overloaded_error",
}


def usage_from(u: Any) -> Usage | None:
    """OpenAI usage → sidegate's (prompt tokens include cached ones, as sidegate counts)."""
    if not isinstance(u, dict):
        return None
    prompt = u.get("prompt_tokens_details")
    completion = u.get("completion_tokens_details")
    details = prompt if isinstance(prompt, dict) else {}
    return Usage(
        input_tokens=as_int(u.get("prompt_tokens")),
        output_tokens=as_int(u.get("completion_tokens")),
        cache_read_tokens=as_int(details.get("cached_tokens")),
        cache_creation_tokens=as_int(details.get("cache_write_tokens")),
        reasoning_tokens=(
            as_int(completion.get("reasoning_tokens")) if isinstance(completion, dict) else 0
        ),
    )


def anthropic_usage(u: Usage | None) -> dict[str, int]:
    """Usage as Anthropic reports it: ``input_tokens`` without cache reads and writes."""
    if u is None:
        return {"input_tokens": 0, "output_tokens": 0}
    cached = u.cache_read_tokens + u.cache_creation_tokens
    return {
        "input_tokens": max(0, u.input_tokens - cached),
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
    }


def reasoning_text(message: dict[str, Any]) -> str:
    """Reasoning an OpenAI-compatible server returned (servers name the field two ways)."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + dumps(data) + b"\n\n"


def error_event(message: str, kind: str = "api_error") -> bytes:
    return _event("error", anthropic_error_body(message, kind))


class StreamTranslator:
    """``chat.completion.chunk`` objects in, Anthropic SSE bytes out."""

    def __init__(self, model: str) -> None:
        self.model = model  # until the provider names its own
        self.id = ""
        self.usage: Usage | None = None
        self.started = False
        self.done = False
        self.finish: str | None = None
        self.refused = False
        self._open: tuple[str, int] | None = None  # the open block: kind, tool call index
        self._index = -1  # Anthropic's index of the last block started
        self._tools: set[int] = set()  # OpenAI tool call indices given a block

    def chunk(self, data: dict[str, Any]) -> bytes:
        if self.done:
            return b""
        if isinstance(data.get("error"), dict):
            return self._error(data["error"])
        out = self._start(data)
        usage = usage_from(data.get("usage"))
        if usage is not None:
            self.usage = usage
        for choice in data.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # sidegate never asks for n > 1
            delta = choice.get("delta")
            if isinstance(delta, dict):
                out += self._delta(delta)
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
            if self.done:
                break
        return out

    def ping(self) -> bytes:
        """A provider's keep-alive comment, passed on the way Anthropic sends them."""
        if self.done:
            return b""
        # Before message_start a ping event would break the SDK's accumulator.
        return _event("ping", {"type": "ping"}) if self.started else b": ping\n\n"

    def stop(self) -> bytes:
        """The provider's ``data: [DONE]``."""
        return self._finish() if not self.done else b""

    def end(self) -> bytes:
        """The provider's stream ended (with or without ``[DONE]``)."""
        if self.done:
            return b""
        if self.finish is not None:
            return self._finish()  # a finish reason came: only [DONE] was left out
        self.done = True
        return error_event("the provider's stream ended before the message was complete")

    # -- pieces ------------------------------------------------------------------

    def _start(self, data: dict[str, Any]) -> bytes:
        if self.started:
            return b""
        self.started = True
        self.id = str(data.get("id") or "")
        if isinstance(data.get("model"), str) and data["model"]:
            self.model = data["model"]
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # OpenAI reports usage at the end only; message_delta carries it.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"type": "message_start", "message": message})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        out = b""
        thinking = reasoning_text(delta)
        if thinking:
            out += self._block_delta("thinking", {"type": "thinking_delta", "thinking": thinking})
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                self.refused |= key == "refusal"
                out += self._block_delta("text", {"type": "text_delta", "text": text})
        for call in delta.get("tool_calls") or []:
            if isinstance(call, dict):
                out += self._tool_delta(call)
                if self.done:
                    break
        return out

    def _block_delta(self, kind: str, delta: dict[str, Any], tool: int = -1) -> bytes:
        out = b""
        if self._open != (kind, tool):
            block: dict[str, Any] = (
                {"type": "text", "text": ""}
                if kind == "text"
                else {"type": "thinking", "thinking": "", "signature": ""}
            )
            out = self._open_block(kind, tool, block)
        data = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return out + _event("content_block_delta", data)

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        index = index if isinstance(index, int) else 0
        found = call.get("function")
        fn: dict[str, Any] = found if isinstance(found, dict) else {}
        out = b""
        if index not in self._tools:
            self._tools.add(index)
            block = {
                "type": "tool_use",
                "id": str(call.get("id") or f"call_{index}"),
                "name": str(fn.get("name") or ""),
                "input": {},
            }
            out = self._open_block("tool", index, block)
        elif self._open != ("tool", index):
            # Anthropic blocks cannot reopen: a fragment for a closed call
            # would be lost, so the stream ends saying so instead.
            return out + self._fail(
                f"the provider interleaved the arguments of tool call {index} with another's"
            )
        fragment = fn.get("arguments")
        if isinstance(fragment, str) and fragment:
            delta = {"type": "input_json_delta", "partial_json": fragment}
            data = {"type": "content_block_delta", "index": self._index, "delta": delta}
            out += _event("content_block_delta", data)
        return out

    def _open_block(self, kind: str, tool: int, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = (kind, tool)
        data = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + _event("content_block_start", data)

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._index})

    def _finish(self) -> bytes:
        out = self._start({}) + self._close()
        reason = "refusal" if self.refused else STOP_REASONS.get(str(self.finish), "end_turn")
        out += _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": None},
                "usage": anthropic_usage(self.usage),
            },
        )
        self.done = True
        return out + _event("message_stop", {"type": "message_stop"})

    def _error(self, err: dict[str, Any]) -> bytes:
        kind = _ERROR_TYPES.get(str(err.get("type") or err.get("code")), "api_error")
        return self._fail(str(err.get("message") or "provider error"), kind)

    def _fail(self, message: str, kind: str = "api_error") -> bytes:
        self.done = True
        return error_event(message, kind)


def parse_chunk(data: str) -> dict[str, Any] | None:
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None

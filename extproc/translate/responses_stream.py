"""Chat completion chunks → Responses API stream events, one chunk at a time.

The Responses stream is a sequence of typed events, each numbered
(``sequence_number``): ``response.created`` and ``response.in_progress``
first; per output item ``response.output_item.added``, its content
(``response.content_part.added``, ``response.output_text.delta`` ...
``.done``, ``response.content_part.done``; or
``response.function_call_arguments.delta`` ... ``.done``) and
``response.output_item.done``; last ``response.completed`` (or
``response.incomplete``) carrying the whole response with its usage.

Chat chunks carry deltas only, so the items are opened as their first delta
arrives and closed when another kind of item starts or the stream ends.
Arguments of several tool calls may interleave (chat numbers them by
``index``); each keeps its own item, all open until the end.

The ``.done`` events and the final response repeat the whole output, so the
output is held until the end, up to ``limit`` characters (the provider stage sets
``limits.max_response_bytes``); past it the stream ends in an error event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import openai_error_body
from ..sse import DEFAULT_MAX_EVENT_BYTES
from ..usage import Usage
from . import responses_chat as rc
from .exchange import dumps


@dataclass
class _Item:
    output_index: int
    item: dict[str, Any]  # the item as output_item.added announced it
    text: list[str] = field(default_factory=list)  # text, refusal, reasoning or arguments
    kind: str = "text"  # text | refusal | reasoning | call


class ResponsesStream:
    """Feed chat completion chunks (parsed); get Responses SSE bytes back."""

    def __init__(
        self, request: dict[str, Any], created: int, limit: int = DEFAULT_MAX_EVENT_BYTES
    ) -> None:
        self.limit = limit
        self.held = 0  # characters of output text and arguments held for the final events
        self.request = request
        self.created = created
        self.id = rc.new_id("resp")
        self.model = str(request.get("model") or "")
        self.seq = 0
        self.started = False
        self.done = False
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self._items: list[_Item] = []  # every item, in output order
        self._message: _Item | None = None  # the open message item (text or refusal part)
        self._reasoning: _Item | None = None
        self._calls: dict[int, _Item] = {}  # chat tool call index → its item

    # -- framing ------------------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return f"event: {kind}\n".encode() + b"data: " + dumps(data) + b"\n\n"

    def _response(self, status: str, incomplete: dict[str, Any] | None = None) -> dict[str, Any]:
        return rc.response_object(
            self.request,
            response_id=self.id,
            created=self.created,
            model=self.model,
            status=status,
            incomplete=incomplete,
            output=[self._final(i) for i in self._items] if status != "in_progress" else [],
            usage=self.usage if status != "in_progress" else None,
        )

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self.started = True
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        return self._event(
            "response.created", response=self._response("in_progress")
        ) + self._event("response.in_progress", response=self._response("in_progress"))

    # -- items --------------------------------------------------------------------

    def _open(self, item: dict[str, Any], kind: str) -> tuple[_Item, bytes]:
        entry = _Item(len(self._items), item, kind=kind)
        self._items.append(entry)
        return entry, self._event(
            "response.output_item.added", output_index=entry.output_index, item=item
        )

    def _final(self, entry: _Item) -> dict[str, Any]:
        text = "".join(entry.text)
        item = entry.item
        if entry.kind == "call":
            return rc.call_item(item["id"], item["call_id"], item["name"], text, "completed")
        if entry.kind == "reasoning":
            return rc.reasoning_item(item["id"], text)
        part = rc.text_part(text) if entry.kind == "text" else {"type": "refusal", "refusal": text}
        return rc.message_item(item["id"], [part], "completed")

    def _part(self, entry: _Item) -> dict[str, Any]:
        text = "".join(entry.text)
        if entry.kind == "text":
            return rc.text_part(text)
        if entry.kind == "refusal":
            return {"type": "refusal", "refusal": text}
        return {"type": "reasoning_text", "text": text}

    def _close(self, entry: _Item) -> bytes:
        at = {"item_id": entry.item["id"], "output_index": entry.output_index}
        text = "".join(entry.text)
        out = b""
        if entry.kind == "call":
            # OpenAI names the function here too (openai-python 3.3 requires it).
            out += self._event(
                "response.function_call_arguments.done",
                **at,
                name=entry.item["name"],
                arguments=text,
            )
        else:
            if entry.kind == "text":
                out += self._event(
                    "response.output_text.done", **at, content_index=0, text=text, logprobs=[]
                )
            elif entry.kind == "refusal":
                out += self._event("response.refusal.done", **at, content_index=0, refusal=text)
            else:
                out += self._event("response.reasoning_text.done", **at, content_index=0, text=text)
            out += self._event(
                "response.content_part.done", **at, content_index=0, part=self._part(entry)
            )
        return out + self._event(
            "response.output_item.done", output_index=entry.output_index, item=self._final(entry)
        )

    def _close_message(self) -> bytes:
        out = b""
        for attr in ("_reasoning", "_message"):
            entry = getattr(self, attr)
            if entry is not None:
                out += self._close(entry)
                setattr(self, attr, None)
        return out

    def _content(self, kind: str, delta: str) -> bytes:
        """A text, refusal or reasoning delta: into the open item of its kind, opened if need be."""
        out = b""
        attr = "_reasoning" if kind == "reasoning" else "_message"
        entry: _Item | None = getattr(self, attr)
        if entry is not None and entry.kind != kind:
            out += self._close(entry)
            entry = None
        if entry is None:
            if kind != "reasoning":
                out += self._close_message()  # reasoning comes before the answer it led to
                item = rc.message_item(rc.new_id("msg"), [], "in_progress")
            else:
                item = {**rc.reasoning_item(rc.new_id("rs"), "", "in_progress"), "content": []}
            entry, added = self._open(item, kind)
            setattr(self, attr, entry)
            out += added + self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=entry.output_index,
                content_index=0,
                part=self._part(entry),
            )
        entry.text.append(delta)
        at = {"item_id": entry.item["id"], "output_index": entry.output_index, "content_index": 0}
        if kind == "text":
            return out + self._event("response.output_text.delta", **at, delta=delta, logprobs=[])
        if kind == "refusal":
            return out + self._event("response.refusal.delta", **at, delta=delta)
        return out + self._event("response.reasoning_text.delta", **at, delta=delta)

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        fn = rc.obj(call.get("function"))
        out = b""
        entry = self._calls.get(index)
        if entry is None:
            out += self._close_message()
            item = rc.call_item(
                rc.new_id("fc"),
                str(call.get("id") or rc.new_id("call")),
                str(fn.get("name") or ""),
                "",
                "in_progress",
            )
            entry, added = self._open(item, "call")
            self._calls[index] = entry
            out += added
        args = fn.get("arguments")
        if isinstance(args, str) and args:
            entry.text.append(args)
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=entry.item["id"],
                output_index=entry.output_index,
                delta=args,
            )
        return out

    # -- input --------------------------------------------------------------------

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        """One ``chat.completion.chunk`` (or an error object) → Responses events."""
        if self.done:
            return b""
        if isinstance(chunk.get("error"), dict):
            # Passed on as OpenAI streams carry errors; the SDK raises on it.
            self.done = True
            return b"data: " + dumps(chunk) + b"\n\n"
        out = b"" if self.started else self._start(chunk)
        choices = chunk.get("choices")
        self.held += _delta_bytes(choices)
        if self.held > self.limit:
            return out + self._error(
                f"the response's output passed {self.limit} characters "
                "(limits.max_response_bytes); "
                "the rest of the stream was dropped",
                "response_too_large",
            )
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = rc.obj(choice.get("delta"))
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                out += self._content("reasoning", reasoning)
            if isinstance(delta.get("content"), str) and delta["content"]:
                out += self._content("text", delta["content"])
            if isinstance(delta.get("refusal"), str) and delta["refusal"]:
                out += self._content("refusal", delta["refusal"])
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    out += self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return out

    def finish(self) -> bytes:
        """The chat stream's ``[DONE]``: close every item and send the final response."""
        if self.done:
            return b""
        out = b"" if self.started else self._start({})
        out += self._close_message()
        for entry in self._calls.values():
            out += self._close(entry)
        self._calls.clear()
        self.done = True
        status, incomplete = rc.status_of(self.finish_reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._event(kind, response=self._response(status, incomplete))

    def truncated(self) -> bytes:
        """The provider's stream ended before ``[DONE]``: an error, not a short answer."""
        if self.done:
            return b""
        return self._error(
            "the provider's stream ended before the response was complete", "stream_truncated"
        )

    def _error(self, message: str, code: str) -> bytes:
        # As OpenAI streams carry errors (a data line with an error object): the SDK raises.
        self.done = True
        return b"data: " + dumps(openai_error_body(message, "server_error", code=code)) + b"\n\n"


def _delta_bytes(choices: Any) -> int:
    """Characters of text, reasoning and arguments a chunk adds (a bound, not an exact size)."""
    total = 0
    for choice in choices if isinstance(choices, list) else []:
        delta = rc.obj(rc.obj(choice).get("delta"))
        for key in ("content", "reasoning_content", "reasoning", "refusal"):
            if isinstance(delta.get(key), str):
                total += len(delta[key])
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            args = rc.obj(rc.obj(call).get("function")).get("arguments")
            total += len(args) if isinstance(args, str) else 0
    return total


def parse_chunk(data: str) -> dict[str, Any] | None:
    """A chat SSE ``data:`` payload as an object (None for ``[DONE]`` or junk)."""
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None

"""One attempt's translation: the request for this provider, the response back.

The provider stage drives an ``Exchange`` per attempt. Subclasses (one per API
pair) supply the pure translation; this base class owns the response state
machine: errors are buffered and rewritten whole, JSON bodies are rewritten
whole or passed through while usage is read from them, and SSE streams are
translated event by event as chunks arrive.

Every buffer is bounded by ``max_response_bytes``: an error or JSON body to
rewrite, and one SSE event to translate. A provider that exceeds it gets the
client a clear error in the client's format (in a stream: an error event in
the client's dialect, and nothing after it). Pass-through routes hold nothing
big: SSE events over ``STREAM_PEEK_BYTES`` flow on as their bytes arrive (the
events that carry usage are small), and a JSON body flows on while only a
bounded tail of it is kept to read usage from.
"""

from __future__ import annotations

import abc
import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..apis import ClientApi, ErrorStyle
from ..config import Defaults, Model, Provider, StructuredOutputs
from ..errors import GatewayError, anthropic_error_body, openai_error_body
from ..sse import DEFAULT_MAX_EVENT_BYTES, Event, EventTooLarge, SSEDecoder
from ..usage import Usage

# Pass-through streams parse events up to this size whole; larger ones are
# forwarded as they arrive, unparsed (usage never rides in a large event).
STREAM_PEEK_BYTES = 64 * 1024
# While a translated stream holds a large event, a comment goes out per this
# many bytes received: Envoy's per-try idle timer (timeouts.first_byte) and
# the client's read timeout count only bytes that passed the provider stage.
KEEPALIVE_BYTES = 1024 * 1024
KEEPALIVE = b": sidegate: receiving a large event\n\n"
# Of a passed-through JSON body larger than the bound, this much of the end is
# kept: usage comes last in OpenAI and Anthropic bodies.
JSON_TAIL_BYTES = 64 * 1024
# A response's id, model and finish reasons are the provider's text: kept bounded.
META_CHARS = 128
MAX_REASONS = 16


@dataclass(frozen=True, slots=True)
class AttemptContext:
    client_api: ClientApi
    body: dict[str, Any]  # the client's body, parsed once by the policy stage
    raw: str  # the client's body as sent
    provider: Provider
    model: Model
    stream: bool
    include_usage: bool  # the client asked for the final usage chunk
    defaults: Defaults
    # A listener records what the response says about itself (id, model,
    # finish reasons) where reading it costs more than what is parsed anyway.
    response_meta: bool = False
    # Characters of the answer's text to keep (0: none): a route that records content.
    capture_text: int = 0


@dataclass(frozen=True, slots=True)
class Outbound:
    path: str  # full upstream path, the provider's base path included
    body: bytes


class Mode(enum.Enum):
    JSON = "json"
    STREAM = "stream"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    rewrites: bool  # the body changes: drop content-length
    content_type: str | None  # a new content-type, or None to keep the provider's
    status: int | None = None  # a new status for the client, or None to keep the provider's


class Exchange(abc.ABC):
    # True when a 2xx JSON body reaches the client unchanged (only read for usage).
    passthrough_json: bool = False
    # True when SSE events reach the client as the provider sent them (only
    # small ones are parsed, for usage), so a large one is never held.
    passthrough_stream: bool = False

    def __init__(self, ctx: AttemptContext) -> None:
        self.ctx = ctx
        self.usage: Usage | None = None
        # What the response says about itself, where it is parsed anyway (for usage).
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.finish_reasons: list[str] = []
        # The answer's text, when the route records content (``capture_text``).
        self.text: list[str] | None = [] if ctx.capture_text else None
        self._text_len = 0
        self.status = 0
        self.mode = Mode.JSON
        self.max_bytes = DEFAULT_MAX_EVENT_BYTES
        self.too_large = 0  # bytes seen of a body over max_bytes (0: within the bound)
        self._buf = bytearray()
        self._sse = SSEDecoder()
        self._keepalives = 0  # comments sent for the event being held
        # Applied to a provider's error body before ``error`` quotes it: the
        # quote is cut short (``error_text``), and a key cut in two there is
        # past recognising by the time the provider stage scrubs the output.
        self.scrub_error: Callable[[bytes], bytes] = bytes

    def keep_text(self, text: object) -> None:
        """Add to the answer's text, up to ``capture_text`` characters."""
        if self.text is None or not isinstance(text, str) or not text:
            return
        room = self.ctx.capture_text - self._text_len
        if room > 0:
            self.text.append(text[:room])
            self._text_len += min(len(text), room)

    # -- request ---------------------------------------------------------------

    @classmethod
    def refusal(cls, body: dict[str, Any], structured: StructuredOutputs) -> GatewayError | None:
        """Why this pair cannot translate ``body`` (None: it can), asked before routing.

        The policy stage asks it of each capability of a plan so that a request
        goes to the candidates that can serve it (``routing``).
        """
        return None

    @abc.abstractmethod
    def request(self) -> Outbound: ...

    # -- response --------------------------------------------------------------

    def begin_response(
        self,
        status: int,
        content_type: str,
        max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        content_length: int | None = None,
    ) -> ResponsePlan:
        self.status = status
        self.max_bytes = max_bytes
        if status >= 400 or status < 200:
            self.mode = Mode.ERROR
            return ResponsePlan(rewrites=True, content_type="application/json")
        if content_type.startswith("text/event-stream"):
            self.mode = Mode.STREAM
            self._sse = SSEDecoder(
                max_bytes, stream_over=STREAM_PEEK_BYTES if self.passthrough_stream else None
            )
            return ResponsePlan(rewrites=True, content_type="text/event-stream")
        self.mode = Mode.JSON
        if self.passthrough_json:
            return ResponsePlan(rewrites=False, content_type=None)
        if content_length is not None and content_length > max_bytes:
            # Known too large before a byte of it: the client gets a 502, not a 200.
            self.status = 502
            self.too_large = content_length
            return ResponsePlan(rewrites=True, content_type="application/json", status=502)
        return ResponsePlan(rewrites=True, content_type="application/json")

    def feed(self, data: bytes) -> bytes:
        if self.mode is Mode.STREAM:
            items = self._sse.feed(data)
            out = b"".join(self._stream_item(item) for item in items)
            if any(isinstance(item, Event) for item in items):
                self._keepalives = 0  # the held event, if any, is a new one
            # Whole events went out before, so a comment lands between events.
            if self._sse.held // KEEPALIVE_BYTES > self._keepalives:
                self._keepalives = self._sse.held // KEEPALIVE_BYTES
                out += KEEPALIVE
            return out
        if self.mode is Mode.JSON and self.passthrough_json:
            self._keep_tail(data)
            return data
        if self.too_large:
            pass  # counted from content-length, or at the crossing; nothing more is kept
        elif len(self._buf) + len(data) > self.max_bytes:
            self.too_large = len(self._buf) + len(data)
            self._buf = bytearray()  # nothing of it will be used: free it now
        else:
            self._buf += data
        return b""

    def finish(self) -> bytes:
        if self.mode is Mode.STREAM:
            if self._sse.failed is not None:
                return b""  # the client got an error event already
            return self.stream_end(self._sse.pending)
        body = bytes(self._buf)
        self._buf.clear()
        if self.mode is Mode.ERROR:
            if self.too_large:
                return self.error(self.status, self._too_large_text("an error body"))
            return self.error(self.status, self.scrub_error(body))
        if self.passthrough_json:
            # The body already went out as it came; only usage is read from it.
            parsed = _usage_holder(body) if self.too_large else _loads(body)
            if isinstance(parsed, dict):
                self.json_response(parsed)
            return b""
        if self.too_large:
            return self.error(502, self._too_large_text("a response"))
        parsed = _loads(body)
        if not isinstance(parsed, dict):
            return self.error(502, b"provider sent a 2xx response that is not a JSON object")
        return self.json_response(parsed)

    def _keep_tail(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > self.max_bytes:
            self.too_large = self.too_large or len(self._buf)
            del self._buf[:-JSON_TAIL_BYTES]

    def _stream_item(self, item: Event | bytes | EventTooLarge) -> bytes:
        if isinstance(item, Event):
            return self.stream_event(item)
        if isinstance(item, bytes):
            return item  # part of a large event on a pass-through stream
        message = (
            f"provider {self.ctx.provider.name!r} sent a stream event over {item.limit} bytes "
            "(limits.max_response_bytes); the rest of its stream was dropped"
        )
        return self.stream_error(message)

    def _too_large_text(self, what: str) -> bytes:
        return (
            f"{what} over {self.max_bytes} bytes (limits.max_response_bytes), "
            f"{self.too_large} bytes received"
        ).encode()

    def stream_error(self, message: str, code: str = "response_too_large") -> bytes:
        """An error event that ends a stream, in the client's SSE dialect."""
        if self.ctx.client_api.error_style is ErrorStyle.ANTHROPIC:
            body = anthropic_error_body(message, "api_error")
            return b"event: error\ndata: " + dumps(body) + b"\n\n"
        # OpenAI streams carry errors as a data line with an "error" object.
        body = openai_error_body(message, "server_error", code=code)
        return b"data: " + dumps(body) + b"\n\n"

    # -- per API pair ----------------------------------------------------------

    @abc.abstractmethod
    def json_response(self, body: dict[str, Any]) -> bytes:
        """Translate (or, when passing through, only read) a complete JSON body."""

    @abc.abstractmethod
    def stream_event(self, event: Event) -> bytes: ...

    @abc.abstractmethod
    def stream_end(self, pending: bytes) -> bytes:
        """The stream ended; ``pending`` is a last event the provider never terminated."""

    @abc.abstractmethod
    def error(self, status: int, body: bytes) -> bytes: ...


def read_meta(exchange: Exchange, body: dict[str, Any], reasons: list[str] | None = None) -> None:
    """Keep a response's id and model (strings from provider JSON, bounded) on ``exchange``."""
    rid, model = body.get("id"), body.get("model")
    if isinstance(rid, str) and rid:
        exchange.response_id = rid[:META_CHARS]
    if isinstance(model, str) and model:
        exchange.response_model = model[:META_CHARS]
    if reasons is not None:
        exchange.finish_reasons = [r[:META_CHARS] for r in reasons[:MAX_REASONS]]


def dumps(obj: Any) -> bytes:
    # A lone surrogate (a provider's "\\ud800" escape; the client's are refused)
    # can only sit inside a JSON string, where backslashreplace writes it back
    # as that same escape: valid JSON, and encoding never raises.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "backslashreplace"
    )


def error_text(body: bytes, limit: int = 300) -> str:
    """A non-JSON provider error body, shortened for an error message."""
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _usage_holder(tail: bytes) -> dict[str, Any] | None:
    """``{"usage": ...}`` from the last ``"usage"`` object in the tail of a JSON body."""
    at = tail.rfind(b'"usage"')
    if at < 0:
        return None
    brace = tail.find(b"{", at)
    if brace < 0:
        return None
    try:
        usage, _ = json.JSONDecoder().raw_decode(tail[brace:].decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return {"usage": usage} if isinstance(usage, dict) else None

"""One attempt's translation: the request for this provider, the response back.

The provider stage drives an ``Exchange`` per attempt. Subclasses (one per API
pair) supply the pure translation; this base class owns the response state
machine: errors are buffered and rewritten whole (they are small), JSON bodies
are rewritten whole or passed through while a copy is kept for usage, and SSE
streams are translated event by event as chunks arrive, never buffered.
"""

from __future__ import annotations

import abc
import enum
import json
from dataclasses import dataclass
from typing import Any

from ..apis import ClientApi
from ..config import Defaults, Model, Provider
from ..sse import Event, SSEDecoder
from ..usage import Usage


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


class Exchange(abc.ABC):
    # True when a 2xx JSON body reaches the client unchanged (only read for usage).
    passthrough_json: bool = False

    def __init__(self, ctx: AttemptContext) -> None:
        self.ctx = ctx
        self.usage: Usage | None = None
        self.status = 0
        self.mode = Mode.JSON
        self._buf = bytearray()
        self._sse = SSEDecoder()

    # -- request ---------------------------------------------------------------

    @abc.abstractmethod
    def request(self) -> Outbound: ...

    # -- response --------------------------------------------------------------

    def begin_response(self, status: int, content_type: str) -> ResponsePlan:
        self.status = status
        if status >= 400 or status < 200:
            self.mode = Mode.ERROR
            return ResponsePlan(rewrites=True, content_type="application/json")
        if content_type.startswith("text/event-stream"):
            self.mode = Mode.STREAM
            return ResponsePlan(rewrites=True, content_type="text/event-stream")
        self.mode = Mode.JSON
        if self.passthrough_json:
            return ResponsePlan(rewrites=False, content_type=None)
        return ResponsePlan(rewrites=True, content_type="application/json")

    def feed(self, data: bytes) -> bytes:
        if self.mode is Mode.STREAM:
            return b"".join(self.stream_event(ev) for ev in self._sse.feed(data))
        self._buf += data
        if self.mode is Mode.JSON and self.passthrough_json:
            return data
        return b""

    def finish(self) -> bytes:
        if self.mode is Mode.STREAM:
            return self.stream_end(self._sse.pending)
        body = bytes(self._buf)
        self._buf.clear()
        if self.mode is Mode.ERROR:
            return self.error(self.status, body)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if self.passthrough_json:
            # The body already went out as it came; only usage is read from it.
            if isinstance(parsed, dict):
                self.json_response(parsed)
            return b""
        if not isinstance(parsed, dict):
            return self.error(502, b"provider sent a 2xx response that is not a JSON object")
        return self.json_response(parsed)

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

"""Server-sent events, decoded incrementally from arbitrary byte chunks, in bounded memory.

Providers split SSE anywhere, even inside a UTF-8 character or a CRLF; an
event is complete only at its blank line. Each event keeps its raw bytes (line
ends normalised to LF) so a pass-through stream can forward it untouched.

Every byte is looked at a constant number of times whatever the chunking, so
a 4 MB event costs what four 1 MB events cost. An event is held until it is
complete only up to a bound: past ``max_event_bytes`` the decoder either
returns ``EventTooLarge`` and drops the rest of the stream (a translating
caller must see whole events) or, with
``stream_over``, hands the rest of that event on as raw bytes as they arrive
(a pass-through caller only needs to parse the small events that carry usage).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Event:
    event: str | None
    data: str
    raw: bytes  # the event as received, terminator included

    @property
    def is_comment(self) -> bool:
        return self.event is None and not self.data


@dataclass(frozen=True, slots=True)
class EventTooLarge:
    """One event grew past the decoder's bound before its blank line arrived.

    Returned in place of the event; the decoder drops everything after it.
    """

    size: int  # bytes held when the bound was crossed
    limit: int


# Images and long tool arguments arrive as one event; 16 MiB holds a large
# image in base64 with room to spare, as the request body limit does.
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024


class SSEDecoder:
    """``feed`` returns complete events, and, past ``stream_over``, raw bytes of a large one."""

    def __init__(
        self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, *, stream_over: int | None = None
    ) -> None:
        self.max_event_bytes = max_event_bytes
        self.stream_over = stream_over
        # The event being held, as the pieces it arrived in (LF line ends):
        # joined once when it completes, so each byte is copied a fixed number
        # of times however many chunks it came in.
        self._parts: list[bytes] = []
        self._held = 0
        self._cr = False  # the last chunk ended in CR: a LF opening the next one is its pair
        self._passing = False  # the current event is too large to hold: its bytes pass on
        self._passed_lf = False  # ... and the last byte passed on was a LF
        self.failed: EventTooLarge | None = None

    def feed(self, chunk: bytes) -> list[Event | bytes | EventTooLarge]:
        if self.failed is not None:
            return []
        data = self._normalise(chunk)
        out: list[Event | bytes | EventTooLarge] = []
        pos = 0
        while pos < len(data) and self.failed is None:
            step = self._pass_on if self._passing else self._hold
            pos = step(data, pos, out)
        return out

    @property
    def held(self) -> int:
        """Bytes of the unfinished event held so far."""
        return self._held

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (at end of stream: a truncated event)."""
        return b"".join(self._parts)

    def _normalise(self, chunk: bytes) -> bytes:
        if self._cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return chunk

    def _hold(self, data: bytes, pos: int, out: list[Event | bytes | EventTooLarge]) -> int:
        """Complete the held event and any whole ones in ``data``; hold the rest."""
        if self._parts and self._parts[-1].endswith(b"\n") and data.startswith(b"\n", pos):
            self._emit(data[pos : pos + 1], out)  # the blank line straddled two chunks
            pos += 1
        while True:
            end = data.find(b"\n\n", pos)
            if end < 0:
                break
            self._emit(data[pos : end + 2], out)
            pos = end + 2
        if pos < len(data):
            rest = data[pos:] if pos else data
            self._parts.append(rest)
            self._held += len(rest)
        if self.stream_over is not None and self._held > self.stream_over:
            # The held part of a large event goes out first; the rest of it
            # flows on as it arrives.
            held = b"".join(self._parts)
            self._parts, self._held = [], 0
            self._passing = True
            self._passed_lf = held.endswith(b"\n")
            out.append(held)
        elif self._held > self.max_event_bytes:
            self.failed = EventTooLarge(self._held, self.max_event_bytes)
            out.append(self.failed)
            self._parts, self._held = [], 0
        return len(data)

    def _emit(self, last: bytes, out: list[Event | bytes | EventTooLarge]) -> None:
        raw = b"".join((*self._parts, last)) if self._parts else last
        self._parts, self._held = [], 0
        event = _parse(raw)
        if event is not None:
            out.append(event)

    def _pass_on(self, data: bytes, pos: int, out: list[Event | bytes | EventTooLarge]) -> int:
        if self._passed_lf and data.startswith(b"\n", pos):
            end = pos + 1
        else:
            found = data.find(b"\n\n", pos)
            end = found + 2 if found >= 0 else len(data)
            if found < 0:
                self._passed_lf = data.endswith(b"\n")
                out.append(data[pos:])
                return end
        out.append(data[pos:end])
        self._passing = False
        self._passed_lf = False
        return end


def _parse(raw: bytes) -> Event | None:
    name: str | None = None
    data: list[str] = []
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        if not line or line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if name is None and not data:
        return Event(None, "", raw) if raw.strip() else None
    return Event(name, "\n".join(data), raw)


def encode(data: str, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"{head}{body}\n".encode()

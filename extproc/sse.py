"""Server-sent events, decoded incrementally from arbitrary byte chunks.

Providers split SSE anywhere, even inside a UTF-8 character; an event is
complete only at its blank line. Each event keeps its raw bytes so a
pass-through stream can forward it untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class Event:
    event: str | None
    data: str
    raw: bytes  # the event as received, terminator included

    @property
    def is_comment(self) -> bool:
        return self.event is None and not self.data


class SSEDecoder:
    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> Iterator[Event]:
        buf = self._buf + chunk
        if b"\r" in buf:
            # Normalise CRLF and CR line ends; a trailing CR may be half of a CRLF.
            keep_cr = buf.endswith(b"\r")
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buf = buf[:-1] + b"\r"
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            raw = buf[start : end + 2]
            start = end + 2
            event = _parse(raw)
            if event is not None:
                yield event
        self._buf = buf[start:]

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet terminated (at end of stream: a truncated event)."""
        return self._buf


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

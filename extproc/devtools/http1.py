"""The smallest HTTP/1.1 response reader the load drivers need (bench, soak).

Hand-rolled so that the client's own cost stays far below what it measures;
it reads whole responses from a trusted local server, nothing more.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    close: bool  # the server closes the connection after it
    first_chunk: float | None  # perf_counter() when a chunked body's first chunk came


async def read_response(reader: asyncio.StreamReader) -> Response:
    """Read one response whole (content-length or chunked body)."""
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    status = int(head[9:12])
    close = b"\r\nconnection: close\r\n" in head
    if b"\r\ntransfer-encoding: chunked\r\n" in head:
        first: float | None = None
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return Response(status, close, first)
            if first is None:
                first = time.perf_counter()
    length = 0
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return Response(status, close, None)

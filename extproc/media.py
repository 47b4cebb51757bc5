"""How big the media inside a request are: image dimensions, audio length, PDF pages.

Read from the bytes a client sends (usually base64 inside JSON) without a
media library: image headers hold their size in the first bytes, a WAV header
its byte rate, and a PDF names each page object. Only as much base64 as the
answer needs is decoded, except for PDFs, whose pages can be anywhere.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import zlib

HEAD = 64 * 1024  # base64 characters decoded to look for an image's size
MAX_INFLATED = 16 * 1024 * 1024  # bytes inflated in all while looking for PDF pages


def b64_head(data: str, chars: int = HEAD) -> bytes:
    """The first bytes of base64 ``data`` (no more than ``chars`` characters are decoded)."""
    head = data[: chars - chars % 4].strip()
    head = head[: len(head) - len(head) % 4]
    try:
        return base64.b64decode(head, validate=False)
    except (binascii.Error, ValueError):
        return b""


def b64_size(data: str) -> int:
    """Decoded bytes of base64 ``data``, without decoding it."""
    n = len(data.strip())
    return n * 3 // 4 - data.rstrip().endswith("=") - data.rstrip().endswith("==")


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 payload) of a ``data:...;base64,`` URL."""
    if not url.startswith("data:"):
        return None
    meta, sep, payload = url[5:].partition(",")
    if not sep or not meta.endswith(";base64"):
        return None
    return meta[: -len(";base64")].split(";", 1)[0].lower(), payload


def image_size(head: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF, JPEG or WebP image from its first bytes."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24:
        w, h = struct.unpack(">II", head[16:24])
        return (w, h) if w and h else None
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        w, h = struct.unpack("<HH", head[6:10])
        return (w, h) if w and h else None
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(head)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        # Start-of-frame markers (all but DHT C4, JPG C8, DAC CC) carry the size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return (w, h) if w and h else None
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        w, h = struct.unpack("<HH", data[26:30])
        w, h = w & 0x3FFF, h & 0x3FFF  # the top two bits are a scale, not size
        return (w, h) if w and h else None
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return (w, h)
    return None


def wav_seconds(head: bytes, total_bytes: int) -> float | None:
    """Length of a PCM WAV file of ``total_bytes`` from its header."""
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    i, byte_rate = 12, 0
    while i + 8 <= len(head):
        chunk, size = head[i : i + 4], int.from_bytes(head[i + 4 : i + 8], "little")
        if chunk == b"fmt " and i + 20 <= len(head):
            byte_rate = int.from_bytes(head[i + 16 : i + 20], "little")
        elif chunk == b"data" and byte_rate:
            # A streamed WAV may give no real size: then the bytes sent decide.
            return min(size, total_bytes) / byte_rate
        i += 8 + size + (size & 1)
    return total_bytes / byte_rate if byte_rate else None


_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_STREAM = re.compile(rb"stream\r?\n")


def pdf_pages(data: bytes) -> int | None:
    """Pages of a PDF: its page objects, also those packed in compressed object streams."""
    if not data.startswith(b"%PDF"):
        return None
    pages = len(_PAGE.findall(data))
    if pages:
        return pages
    # PDF 1.5+ packs objects, page objects among them, into compressed object streams.
    view = memoryview(data)
    budget = MAX_INFLATED
    for m in _STREAM.finditer(data):
        if budget <= 0:
            break
        if b"/ObjStm" not in data[max(0, m.start() - 512) : m.start()]:
            continue
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(view[m.end() :], budget)
        except zlib.error:
            continue
        budget -= len(out)
        pages += len(_PAGE.findall(out))
    return pages or None

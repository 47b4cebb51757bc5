"""JSON text as the client sent it: top-level fields edited in place, every
other byte left alone; and scans that must run before the text is parsed.

Passing a body through "byte for byte but for the model" keeps fields sidegate
does not know about, number formatting and key order exactly as the client
sent them, which re-serialising a parsed dict would not.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
# A \uD800-\uDFFF escape; may match an escaped backslash followed by "uD800",
# so a hit only means "look closer".
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_decoder = json.JSONDecoder()


def _skip(raw: str, i: int) -> int:
    m = _WS.match(raw, i)
    assert m is not None
    return m.end()


def depth_over(raw: bytes, limit: int) -> int | None:
    """How deep arrays and objects nest in ``raw`` if deeper than ``limit``, else None.

    Linear and non-recursive, so it runs before ``json.loads`` (which recurses
    once per level) can meet a body nested 100,000 levels deep.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return None  # the common case, at the cost of two memchr-speed scans
    # Drop escapes (so an escaped quote ends nothing) and all but quotes and
    # brackets; then every other run between quotes is inside a string (an
    # unterminated last one included): what is left is the structure.
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    shape = b"".join(raw.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    depth = max(itertools.accumulate(map(_STEP.__getitem__, shape)), default=0)
    return depth if depth > limit else None


def may_hold_surrogate(raw: str) -> bool:
    """Whether ``raw`` has a \\uD800-\\uDFFF escape (lone or in a pair; decoded text has none)."""
    return _SURROGATE_ESCAPE.search(raw) is not None


def top_level_spans(raw: str) -> dict[str, tuple[int, int]]:
    """Map each top-level key of a JSON object to the (start, end) of its value."""
    i = _skip(raw, 0)
    if raw[i : i + 1] != "{":
        raise ValueError("not a JSON object")
    spans: dict[str, tuple[int, int]] = {}
    i = _skip(raw, i + 1)
    if raw[i : i + 1] == "}":
        return spans
    while True:
        if raw[i : i + 1] != '"':
            raise ValueError(f"expected a key at offset {i}")
        key, i = json.decoder.scanstring(raw, i + 1)  # type: ignore[attr-defined]
        i = _skip(raw, i)
        if raw[i : i + 1] != ":":
            raise ValueError(f"expected ':' at offset {i}")
        start = _skip(raw, i + 1)
        _, end = _decoder.raw_decode(raw, start)
        spans[key] = (start, end)
        i = _skip(raw, end)
        if raw[i : i + 1] == ",":
            i = _skip(raw, i + 1)
            continue
        if raw[i : i + 1] == "}":
            return spans
        raise ValueError(f"expected ',' or '}}' at offset {i}")


def set_fields(raw: str, updates: dict[str, Any]) -> str:
    """Return ``raw`` with each top-level key in ``updates`` set to its value."""
    spans = top_level_spans(raw)
    edits: list[tuple[int, int, str]] = []
    new: list[str] = []
    for key, value in updates.items():
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        if key in spans:
            start, end = spans[key]
            edits.append((start, end, text))
        else:
            new.append(f"{json.dumps(key)}:{text}")
    out = raw
    for start, end, text in sorted(edits, reverse=True):
        out = out[:start] + text + out[end:]
    if new:
        brace = out.index("{") + 1
        sep = "," if spans else ""
        out = out[:brace] + ",".join(new) + sep + out[brace:]
    return out

"""Edit top-level fields of a JSON object in place, leaving every other byte alone.

Passing a body through "byte for byte but for the model" keeps fields sidegate
does not know about, number formatting and key order exactly as the client
sent them, which re-serialising a parsed dict would not.
"""

from __future__ import annotations

import json
import re
from typing import Any

_WS = re.compile(r"[ \t\n\r]*")
_decoder = json.JSONDecoder()


def _skip(raw: str, i: int) -> int:
    m = _WS.match(raw, i)
    assert m is not None
    return m.end()


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

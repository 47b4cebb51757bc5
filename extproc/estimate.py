"""Tokens of a request, estimated before it leaves.

The estimate feeds quota admission and is corrected by the provider's reported
usage when the response completes. It must never be far *below* what the
provider will bill, or a quota could be bypassed by content the estimate
does not see: every content type a provider bills is counted from what it
contains, and where the content cannot be measured cheaply (an image or PDF
given by URL or file id) the estimate is a stated maximum.

- Text, tool calls, tool results, thinking: tiktoken, plus OpenAI's published
  chat overhead (3 tokens a message, 3 to prime the reply).
- Tool definitions and response schemas: their JSON, counted as text (above
  what providers bill for them, which is a shorter rendering).
- Images: the dearer of OpenAI's tile formula (``detail: low`` 85; otherwise
  85 + 170 per 512 px tile after fitting 2048 px and 768 px on the short side)
  and Anthropic's (width x height / 750 after fitting 1568 px, at most ~1,600),
  from the size read in the image header; any candidate may serve the request.
  An image whose size cannot be read costs ``IMAGE_MAX``.
- PDFs: ``PDF_PAGE`` per page (Anthropic bills each page as its text, up to
  ~3,000 tokens, plus the page as an image, up to ~1,600). Plain-text
  documents: their text.
- Audio: ``AUDIO_PER_SECOND`` per second, WAV length from its header, other
  formats assumed at 16 kbit/s (longer than any real encoding, so more).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from . import media
from .apis import ClientApi

PER_MESSAGE = 3
REPLY_PRIMER = 3
OPENAI_LOW_DETAIL = 85  # OpenAI: a low-detail image, and the base of a high-detail one
OPENAI_TILE = 170  # OpenAI: each 512 px tile of a high-detail image
ANTHROPIC_PIXELS_PER_TOKEN = 750
IMAGE_MAX = 1600  # an image of unknown size: the most either provider bills for one
PDF_PAGE = 4600  # a PDF page: up to 3,000 tokens of text plus the page as an image
UNSEEN_DOCUMENT = 10 * PDF_PAGE  # a document by URL or file id: its content is not here
AUDIO_PER_SECOND = 10  # OpenAI's audio input rate (one token per 100 ms)
AUDIO_UNKNOWN_BYTES_PER_SECOND = 2000  # 16 kbit/s: below real encodings, so more seconds

# Keys whose string values are structure, not text the model reads.
_STRUCTURAL = frozenset(
    {"type", "role", "id", "tool_call_id", "tool_use_id", "cache_control", "signature"}
)

Counter = Callable[[str], int]


def openai_image(size: tuple[int, int] | None, detail: str = "auto") -> int:
    if detail == "low":
        return OPENAI_LOW_DETAIL
    if size is None:
        return OPENAI_LOW_DETAIL + OPENAI_TILE * 8  # the most tiles: 768 x 2048
    scale = min(1.0, 2048 / max(size))
    w, h = size[0] * scale, size[1] * scale
    scale = min(1.0, 768 / min(w, h))
    return OPENAI_LOW_DETAIL + OPENAI_TILE * math.ceil(w * scale / 512) * math.ceil(
        h * scale / 512
    )


def anthropic_image(size: tuple[int, int] | None) -> int:
    if size is None:
        return IMAGE_MAX
    w, h = size
    scale = min(1.0, 1568 / max(w, h))
    # Images over about 1,600 tokens are scaled down to that.
    return min(IMAGE_MAX, math.ceil(w * scale * h * scale / ANTHROPIC_PIXELS_PER_TOKEN))


def image_tokens(b64: str | None, detail: str = "auto") -> int:
    """An image given as base64 (None: by URL or file id, size unknown)."""
    size = media.image_size(media.b64_head(b64)) if b64 else None
    if size is None:
        return IMAGE_MAX
    return max(openai_image(size, detail), anthropic_image(size))


def pdf_tokens(b64: str) -> int:
    data = media.b64_head(b64, len(b64) + 4)
    pages = media.pdf_pages(data)
    if pages is None:
        # Pages not found: assume a page per 3 KB, denser than real PDFs.
        pages = max(1, math.ceil(len(data) / 3000))
    return pages * PDF_PAGE


def audio_tokens(b64: str, fmt: str) -> int:
    size = media.b64_size(b64)
    seconds = media.wav_seconds(media.b64_head(b64, 4096), size) if fmt == "wav" else None
    if seconds is None:
        seconds = size / AUDIO_UNKNOWN_BYTES_PER_SECOND
    return math.ceil(seconds * AUDIO_PER_SECOND)


def _file_tokens(media_type: str, b64: str, count: Counter) -> int:
    if media_type == "application/pdf":
        return pdf_tokens(b64)
    if media_type.startswith("image/"):
        return image_tokens(b64)
    if media_type.startswith("text/") or media_type in ("application/json", ""):
        text = media.b64_head(b64, len(b64) + 4).decode("utf-8", "replace")
        return count(text) if text else 0
    return pdf_tokens(b64)  # anything else is read as a document: the dearest kind


def _json(value: Any, count: Counter) -> int:
    return count(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def _source(source: Any, kind: str, count: Counter) -> int:
    """An Anthropic image or document ``source``."""
    if not isinstance(source, dict):
        return IMAGE_MAX if kind == "image" else UNSEEN_DOCUMENT
    stype = source.get("type")
    data = source.get("data")
    if stype == "text" and isinstance(data, str):
        return count(data)
    if stype == "content":
        return _walk(source.get("content"), count)
    if stype == "base64" and isinstance(data, str):
        if kind == "image":
            return image_tokens(data)
        return _file_tokens(str(source.get("media_type", "")).lower(), data, count)
    return IMAGE_MAX if kind == "image" else UNSEEN_DOCUMENT


def _part(part: dict[str, Any], count: Counter) -> int | None:
    """A typed content part or block; None when its type has no rule of its own."""
    kind = part.get("type")
    if kind == "image_url":  # OpenAI chat
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else None
        detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
        found = media.data_url(url) if isinstance(url, str) else None
        return image_tokens(found[1] if found else None, str(detail))
    if kind == "input_audio":  # OpenAI chat
        audio = part.get("input_audio")
        if isinstance(audio, dict) and isinstance(audio.get("data"), str):
            return audio_tokens(audio["data"], str(audio.get("format", "")))
        return 0
    if kind == "file":  # OpenAI chat
        f = part.get("file")
        found = None
        if isinstance(f, dict) and isinstance(f.get("file_data"), str):
            found = media.data_url(f["file_data"]) or ("application/pdf", f["file_data"])
        return _file_tokens(found[0], found[1], count) if found else UNSEEN_DOCUMENT
    if kind == "input_image":  # OpenAI Responses
        url = part.get("image_url")
        found = media.data_url(url) if isinstance(url, str) else None
        return image_tokens(found[1] if found else None, str(part.get("detail") or "auto"))
    if kind == "input_file":  # OpenAI Responses
        data = part.get("file_data")
        found = None
        if isinstance(data, str) and data:
            found = media.data_url(data) or ("application/pdf", data)
        extra = count(part["filename"]) if isinstance(part.get("filename"), str) else 0
        return extra + (_file_tokens(found[0], found[1], count) if found else UNSEEN_DOCUMENT)
    if kind in ("image", "document"):  # Anthropic
        extra = sum(count(v) for k in ("title", "context") if isinstance(v := part.get(k), str))
        return extra + _source(part.get("source"), kind, count)
    if kind == "tool_use" or kind == "server_tool_use":  # Anthropic
        return count(str(part.get("name", ""))) + _json(part.get("input"), count)
    return None


def _walk(value: Any, count: Counter) -> int:
    if isinstance(value, str):
        return count(value) if value else 0
    if isinstance(value, list):
        return sum(_walk(v, count) for v in value)
    if isinstance(value, dict):
        known = _part(value, count)
        if known is not None:
            return known
        return sum(_walk(v, count) for k, v in value.items() if k not in _STRUCTURAL)
    return 0


def _messages(messages: Any, count: Counter) -> int:
    if not isinstance(messages, list):
        return 0
    return sum(PER_MESSAGE + _walk(m, count) for m in messages) + REPLY_PRIMER


def prompt_tokens(api: ClientApi, body: dict[str, Any], count: Counter) -> int:
    """Estimated input tokens of a validated request body of ``api``."""
    if api is ClientApi.OPENAI_EMBEDDINGS:
        inp = body.get("input")
        # Pre-tokenised input (lists of ints) is already a token count.
        if isinstance(inp, list) and inp and all(isinstance(x, int) for x in inp):
            return len(inp)
        if isinstance(inp, list) and inp and all(isinstance(x, list) for x in inp):
            return sum(len(x) for x in inp)
        return _walk(inp, count)
    if api is ClientApi.OPENAI_RESPONSES:
        return _responses(body, count)
    total = _messages(body.get("messages"), count)
    total += _walk(body.get("system"), count)  # Anthropic's top-level system prompt
    # Definitions the provider renders into the prompt: counted as their JSON.
    for key in ("tools", "functions", "response_format"):
        if body.get(key):
            total += _json(body[key], count)
    return total


def _responses(body: dict[str, Any], count: Counter) -> int:
    """A Responses request: its input items are counted as messages are."""
    inp = body.get("input")
    if isinstance(inp, list):
        total = _messages(inp, count)
    else:
        total = PER_MESSAGE + _walk(inp, count) + REPLY_PRIMER
    if body.get("instructions"):
        total += PER_MESSAGE + _walk(body["instructions"], count)
    # Tool definitions and the output schema (text.format) are rendered into the prompt.
    for key in ("tools", "text"):
        if body.get(key):
            total += _json(body[key], count)
    return total


def output_tokens(api: ClientApi, body: dict[str, Any], default: int) -> int:
    """The most output tokens the request allows (``default`` when it sets no limit)."""
    if api in (ClientApi.OPENAI_EMBEDDINGS, ClientApi.ANTHROPIC_COUNT_TOKENS):
        return 0
    if api is ClientApi.ANTHROPIC_MESSAGES:
        # Required by the API; it covers any thinking budget too.
        return _positive(body.get("max_tokens")) or default
    if api is ClientApi.OPENAI_RESPONSES:
        # Reasoning tokens included, as the API counts them.
        return _positive(body.get("max_output_tokens")) or default
    limit = _positive(body.get("max_completion_tokens")) or _positive(body.get("max_tokens"))
    return (limit or default) * (_positive(body.get("n")) or 1)


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

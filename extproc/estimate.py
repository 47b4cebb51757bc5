"""Prompt tokens of a request, estimated before it leaves.

The count feeds quota admission and is corrected by the provider's reported
usage when the response completes, so it aims at "close and never wildly
low", not at the provider's exact accounting. Text is counted with tiktoken;
the per-message overhead follows OpenAI's published chat formula (3 tokens a
message, 3 to prime the reply); images count a flat low-detail tile, and
base64 payloads are not read as text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .apis import ClientApi

PER_MESSAGE = 3
REPLY_PRIMER = 3
IMAGE_TOKENS = 85  # OpenAI's low-detail image cost; a floor for any image or file part

# Keys whose string values are structure, not text the model reads.
_STRUCTURAL = frozenset({"type", "role", "id", "tool_call_id", "tool_use_id", "cache_control"})
_BINARY_TYPES = frozenset({"image", "image_url", "input_image", "document", "file", "input_audio"})

Counter = Callable[[str], int]


def _walk(value: Any, count: Counter) -> int:
    if isinstance(value, str):
        return count(value) if value else 0
    if isinstance(value, list):
        return sum(_walk(v, count) for v in value)
    if isinstance(value, dict):
        kind = value.get("type")
        # A JSON schema's "type" may be a list (["string", "null"]): unhashable.
        if isinstance(kind, str) and kind in _BINARY_TYPES:
            return IMAGE_TOKENS
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
    total = _messages(body.get("messages"), count)
    # Anthropic: top-level system; both: tool definitions are prompt too.
    total += _walk(body.get("system"), count)
    total += _walk(body.get("tools"), count)
    return total

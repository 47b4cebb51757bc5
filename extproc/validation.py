"""Checks a request body must pass before anything is sent upstream.

Only what every provider of that API would refuse is checked here, so a bad
request costs the caller one clear 4xx naming the field, and no provider call.
"""

from __future__ import annotations

import json
from typing import Any

from .apis import ClientApi
from .errors import GatewayError


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def parse(raw: bytes) -> tuple[dict[str, Any], str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(f"request body is not valid UTF-8 (byte {e.start})") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise _bad(
            f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    return body, text


def check(api: ClientApi, body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise _bad("missing required field 'model'", "model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string", "model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    if api is ClientApi.OPENAI_EMBEDDINGS:
        if "input" not in body:
            raise _bad("missing required field 'input'", "input")
        if not isinstance(body["input"], str | list) or body["input"] in ("", []):
            raise _bad("'input' must be a non-empty string or list", "input")
        return
    messages = body.get("messages")
    if messages is None:
        raise _bad("missing required field 'messages'", "messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _bad(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
    if api is ClientApi.ANTHROPIC_MESSAGES:
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            raise _bad("missing required field 'max_tokens'", "max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _bad("'max_tokens' must be a positive integer", "max_tokens")
    else:
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise _bad("'stream_options' must be an object", "stream_options")


def wants_usage(api: ClientApi, body: dict[str, Any]) -> bool:
    """Whether an OpenAI streaming client asked for the final usage chunk."""
    options = body.get("stream_options")
    return (
        api is not ClientApi.ANTHROPIC_MESSAGES
        and isinstance(options, dict)
        and (options.get("include_usage") is True)
    )

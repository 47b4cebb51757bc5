"""Checks a request body must pass before anything is sent upstream.

Only what every provider of that API would refuse is checked here, so a bad
request costs the caller one clear 4xx naming the field, and no provider call.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from . import rawjson
from .apis import ClientApi, ErrorStyle
from .errors import ECHO_LIMIT, GatewayError, clip

# Deepest nesting of arrays and objects a request body may have. Real requests
# (tool schemas included) stay far below; the limit is what lets every later
# recursive walk (the token estimator, the translators, json.dumps) run without
# hitting Python's recursion limit, so it is checked before anything parses.
MAX_DEPTH = 64

_SURROGATE = re.compile("[\ud800-\udfff]")


def _bad(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def parse(raw: bytes) -> tuple[dict[str, Any], str]:
    """The request body as a JSON object, and as text; a 400 naming the fault otherwise.

    Refused besides malformed JSON: nesting deeper than ``MAX_DEPTH``, a key
    repeated in one object, NaN and infinities, and lone surrogates. Each is
    JSON that Python accepts but a provider would read differently or not at
    all, or that would make sidegate itself fail.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad(f"request body is not valid UTF-8 (byte {e.start})") from None
    body = _loads(text, raw, "request body", None)
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    return body, text


def loads_embedded(text: str, param: str) -> Any:
    """JSON carried in a string field (tool call arguments), under the checks of ``parse``."""
    # surrogatepass: the string may hold a lone surrogate, refused below.
    return _loads(text, text.encode("utf-8", "surrogatepass"), f"'{param}'", param)


def _loads(text: str, raw: bytes, what: str, param: str | None) -> Any:
    depth = rawjson.depth_over(raw, MAX_DEPTH)
    if depth is not None:
        raise _bad(
            f"{what} nests arrays and objects {depth} levels deep; the limit is {MAX_DEPTH}",
            param,
        )
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except json.JSONDecodeError as e:
        raise _bad(
            f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", param
        ) from None
    except _Refused as e:
        raise _bad(f"{what} is not accepted: {e}", param) from None
    except ValueError:
        # What json.loads raises beyond JSONDecodeError: an integer longer
        # than sys.get_int_max_str_digits.
        raise _bad(
            f"{what} is not accepted: a number has more than "
            f"{sys.get_int_max_str_digits()} digits",
            param,
        ) from None
    # Decoded UTF-8 holds no surrogate, and an embedded text comes from a
    # string already checked: only an escape can make one.
    if rawjson.may_hold_surrogate(text):
        found = _surrogate_path(value, param or "")
        if found is not None:
            # The path may hold the surrogate itself (a key): escape it.
            where = found.encode("utf-8", "backslashreplace").decode("utf-8")
            raise _bad(
                f"{clip(where)} holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape "
                "not in a pair), which is not a Unicode character",
                where[:ECHO_LIMIT],
            )
    return value


class _Refused(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Every object, not only the top level: a parser that keeps the first of
    # two keys would read a different request from the one sidegate checked,
    # priced and counted (e.g. two "model" keys, or two "content" keys).
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused(f"key {clip(key)} appears twice in one object")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        # 1e999 reads as inf, which would go out as the non-JSON "Infinity".
        raise _Refused(f"number {clip(text, 30)} is out of range")
    return value


def _surrogate_path(value: Any, path: str) -> str | None:
    """Path of the first string or key holding a lone surrogate.

    Recursion is safe: parse refused anything deeper than MAX_DEPTH first.
    """
    if isinstance(value, str):
        return path if _SURROGATE.search(value) else None
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _surrogate_path(v, f"{path}[{i}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for k, v in value.items():
            where = f"{path}.{k}" if path else k
            if _SURROGATE.search(k):
                return where
            found = _surrogate_path(v, where)
            if found is not None:
                return found
    return None


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
    if api is ClientApi.OPENAI_RESPONSES:
        _check_responses(body)
        return
    messages = body.get("messages")
    if messages is None:
        raise _bad("missing required field 'messages'", "messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list", "messages")
    anthropic = api.error_style is ErrorStyle.ANTHROPIC
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise _bad(f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
        _check_content(m.get("content"), f"messages[{i}].content", required=anthropic)
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


def _check_responses(body: dict[str, Any]) -> None:
    # Without input, only stored state (a previous response, a conversation,
    # a stored prompt) can say what to answer.
    inp = body.get("input")
    if inp is None:
        stored = ("previous_response_id", "conversation", "prompt")
        if not any(body.get(k) is not None for k in stored):
            raise _bad("missing required field 'input'", "input")
    elif isinstance(inp, list):
        for i, item in enumerate(inp):
            if not isinstance(item, dict):
                raise _bad(f"input[{i}] must be an object", f"input[{i}]")
            if item.get("type", "message") == "message":
                _check_content(item.get("content"), f"input[{i}].content", required=True)
    elif not isinstance(inp, str):
        raise _bad("'input' must be a string or a list of items", "input")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("'instructions' must be a string", "instructions")
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
    ):
        raise _bad("'tools' must be a list of objects", "tools")


def _check_content(content: Any, param: str, *, required: bool) -> None:
    # Text, or a list of parts that are objects; OpenAI allows null (an
    # assistant turn that only calls tools), Anthropic does not.
    if isinstance(content, str) or (content is None and not required):
        return
    if not isinstance(content, list):
        raise _bad(f"'{param}' must be a string or a list of content parts", param)
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _bad(f"'{param}[{j}]' must be an object with a string 'type'", f"{param}[{j}]")


def wants_usage(api: ClientApi, body: dict[str, Any]) -> bool:
    """Whether an OpenAI streaming client asked for the final usage chunk."""
    options = body.get("stream_options")
    return (
        api.error_style is not ErrorStyle.ANTHROPIC
        and isinstance(options, dict)
        and (options.get("include_usage") is True)
    )

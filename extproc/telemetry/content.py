"""Message content as the GenAI conventions' content attributes, for routes that opt in.

``gen_ai.system_instructions``, ``gen_ai.input.messages`` and
``gen_ai.output.messages`` hold JSON in the conventions' message shape
(``{"role", "parts": [{"type": "text", "content"}]}``). Only text is kept:
an image or a document is named by its part type, never copied into a span.
Every attribute is bounded (``telemetry.content.max_chars``), and provider
keys are overwritten in it, as in every response a client gets.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..apis import ClientApi
from ..state import RequestState

TRUNCATED = "…[truncated]"


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            text = part.get("text")
            if kind in ("text", "input_text") and isinstance(text, str):
                parts.append({"type": "text", "content": text})
            elif kind == "tool_result":
                parts.append({"type": "tool_call_response", "id": part.get("tool_use_id")})
            elif kind == "tool_use":
                parts.append({"type": "tool_call", "id": part.get("id"), "name": part.get("name")})
            elif isinstance(kind, str):
                parts.append({"type": kind[:32]})  # media: named, not copied
    return parts


def _messages(state: RequestState) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system instructions, input messages) of the request body."""
    body = state.body
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    if state.api is ClientApi.OPENAI_EMBEDDINGS:
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) else inputs if isinstance(inputs, list) else []
        texts = [i for i in items if isinstance(i, str)]
        messages.append({"role": "user", "parts": [{"type": "text", "content": t} for t in texts]})
        return system, messages
    if state.api is ClientApi.ANTHROPIC_MESSAGES:
        system = _text_parts(body.get("system"))
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role in ("system", "developer"):
            system.extend(_text_parts(msg.get("content")))
            continue
        entry: dict[str, Any] = {"role": str(role)[:32], "parts": _text_parts(msg.get("content"))}
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                if isinstance(call, dict):
                    fn = call.get("function") or {}
                    entry["parts"].append(
                        {"type": "tool_call", "id": call.get("id"), "name": fn.get("name")}
                    )
        messages.append(entry)
    return system, messages


def _bounded(value: Any, max_chars: int, scrub: Callable[[bytes], bytes]) -> str:
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > max_chars:
        text = text[: max_chars - len(TRUNCATED)] + TRUNCATED
    return scrub(text.encode("utf-8", "backslashreplace")).decode("utf-8", "replace")


def attributes(
    state: RequestState, max_chars: int, scrub: Callable[[bytes], bytes] = bytes
) -> dict[str, str]:
    system, messages = _messages(state)
    out = {"gen_ai.input.messages": _bounded(messages, max_chars, scrub)}
    if system:
        out["gen_ai.system_instructions"] = _bounded(system, max_chars, scrub)
    if state.output_text is not None:
        output: dict[str, Any] = {
            "role": "assistant",
            "parts": [{"type": "text", "content": state.output_text}],
        }
        if state.finish_reasons:
            output["finish_reason"] = state.finish_reasons[0]
        out["gen_ai.output.messages"] = _bounded([output], max_chars, scrub)
    return out

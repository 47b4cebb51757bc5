"""The fake OpenAI provider's ``POST /v1/responses``: the Responses API, stateful as OpenAI's.

Pure builders for the fake (``fake_provider``): the ``response`` object and
its stream events, in the order and shapes the real API sends them. A
function tool is called when the request offers one (``tool_choice`` picks
which; ``none`` forbids it) and the input holds no tool result after the last
user message; otherwise the answer is text quoting the user (or the tool's
output). Stored responses (``store`` is true unless the request says false)
are kept in a bounded table so ``previous_response_id`` continues them, and an
unknown id is a 404 as at OpenAI.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

# Responses kept for previous_response_id; the oldest are forgotten first.
MAX_STORED = 256


class ResponseStore:
    """Input and output items of stored responses, by id, bounded."""

    def __init__(self, limit: int = MAX_STORED) -> None:
        self.limit = limit
        self._items: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    def get(self, response_id: str) -> list[dict[str, Any]] | None:
        return self._items.get(response_id)

    def put(self, response_id: str, items: list[dict[str, Any]]) -> None:
        self._items[response_id] = items
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    inp = body.get("input")
    if isinstance(inp, str):
        return [{"type": "message", "role": "user", "content": inp}]
    return [i for i in inp if isinstance(i, dict)] if isinstance(inp, list) else []


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")
        )
    return ""


def _since_last_user(items: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The last user message's text, and the items after it."""
    for i in range(len(items) - 1, -1, -1):
        item = items[i]
        if item.get("type", "message") == "message" and item.get("role") == "user":
            return _text_of(item.get("content")), items[i + 1 :]
    return "", items


def _chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [
        t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"
    ]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        return next((t for t in tools if t.get("name") == choice.get("name")), None)
    return tools[0]


def _args(schema: Any) -> dict[str, Any]:
    """Arguments of the schema's types for its required properties."""
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    required = schema.get("required", list(props)) if isinstance(schema, dict) else []
    samples = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
    out: dict[str, Any] = {}
    for name in required:
        kind = props.get(name, {}).get("type") if isinstance(props.get(name), dict) else None
        out[name] = samples.get(str(kind), "test")
    return out


def plan_output(
    name: str, body: dict[str, Any], history: list[dict[str, Any]], text_extra: str = ""
) -> tuple[str | None, dict[str, Any] | None]:
    """(text, None) or (None, function call {name, arguments}) for this turn."""
    said, after = _since_last_user(history)
    results = [i for i in after if i.get("type") == "function_call_output"]
    tool = _chosen_tool(body)
    if tool is not None and not results:
        return None, {"name": tool["name"], "arguments": json.dumps(_args(tool.get("parameters")))}
    if results:
        output = results[-1].get("output")
        text = f"Hello from {name}! The tool said: {_text_of(output)}"
    else:
        text = f"Hello from {name}! You said: {said}"
    return text + text_extra, None


def response(
    body: dict[str, Any],
    response_id: str,
    output: list[dict[str, Any]],
    status: str,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": usage,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def output_items(
    suffix: str, text: str | None, call: dict[str, Any] | None
) -> list[dict[str, Any]]:
    if call is not None:
        return [
            {
                "id": f"fc_{suffix}",
                "type": "function_call",
                "status": "completed",
                "arguments": call["arguments"],
                "call_id": f"call_{suffix}",
                "name": call["name"],
            }
        ]
    return [
        {
            "id": f"msg_{suffix}",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": text or "", "annotations": [], "logprobs": []}
            ],
        }
    ]


def words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


def events(body: dict[str, Any], final: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The stream of ``final`` (a complete response) as OpenAI sends it, unnumbered."""
    pending = {**final, "status": "in_progress", "output": [], "usage": None}
    out: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": pending}),
        ("response.in_progress", {"response": pending}),
    ]
    for index, item in enumerate(final["output"]):
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            out.append(
                (
                    "response.output_item.added",
                    {
                        "output_index": index,
                        "item": {**item, "arguments": "", "status": "in_progress"},
                    },
                )
            )
            args = item["arguments"]
            half = len(args) // 2
            for piece in (args[:half], args[half:]):
                out.append(("response.function_call_arguments.delta", {**at, "delta": piece}))
            out.append(
                (
                    "response.function_call_arguments.done",
                    {**at, "name": item["name"], "arguments": args},
                )
            )
        else:
            text = item["content"][0]["text"]
            empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(
                (
                    "response.output_item.added",
                    {
                        "output_index": index,
                        "item": {**item, "content": [], "status": "in_progress"},
                    },
                )
            )
            out.append(("response.content_part.added", {**at, "content_index": 0, "part": empty}))
            for w in words(text):
                out.append(
                    (
                        "response.output_text.delta",
                        {**at, "content_index": 0, "delta": w, "logprobs": []},
                    )
                )
            out.append(
                (
                    "response.output_text.done",
                    {**at, "content_index": 0, "text": text, "logprobs": []},
                )
            )
            out.append(
                (
                    "response.content_part.done",
                    {**at, "content_index": 0, "part": item["content"][0]},
                )
            )
        out.append(("response.output_item.done", {"output_index": index, "item": item}))
    out.append(("response.completed", {"response": final}))
    return out


def sse(kind: str, data: dict[str, Any], sequence: int) -> bytes:
    payload = {"type": kind, "sequence_number": sequence, **data}
    return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

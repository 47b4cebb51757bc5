"""OpenAI Responses client → chat completions: the stateless subset, both ways.

Request: ``instructions`` becomes a system message; ``input`` (a string, or
items) becomes chat messages: messages with ``input_text`` / ``input_image`` /
``input_file`` parts, ``function_call`` items as an assistant turn's
``tool_calls`` (consecutive calls join one turn), ``function_call_output`` as
``tool`` messages; ``reasoning`` items are dropped (they are the opaque state
of the provider that wrote them; chat completions takes none). Function tools
and ``tool_choice`` are unwrapped from Responses' flat form, ``text.format``
becomes ``response_format``, ``max_output_tokens`` ``max_tokens``,
``reasoning.effort`` ``reasoning_effort``.

What needs the provider's stored state or its hosted tools cannot be
translated and is refused with a 400 naming it (``refusals``): that is
decided from the body alone, before any provider is picked.

Response: a ``chat.completion`` becomes a ``response`` object (reasoning,
message and function_call output items; status; usage); streams are in
``responses_stream``.
"""

from __future__ import annotations

import secrets
from typing import Any

from ..errors import GatewayError
from ..usage import Usage

# Input item types chat completions can carry.
_STATELESS_ITEMS = frozenset({"message", "function_call", "function_call_output", "reasoning"})
# finish_reason → (status, incomplete_details.reason)
_STATUS = {
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, code="unsupported_for_provider", param=param)


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one: provider JSON is read leniently."""
    return value if isinstance(value, dict) else {}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# --- what only a provider that serves /responses itself can do -----------------


def stateful_fields(body: dict[str, Any]) -> list[str]:
    """Fields that continue state kept at one provider: only that provider can serve them."""
    return [f for f in ("previous_response_id", "conversation") if body.get(f) is not None]


def refusals(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(param, why) for each part of a Responses request a translation cannot carry."""
    out = [
        (f, "continues a response stored at the provider that made it")
        for f in stateful_fields(body)
    ]
    if body.get("store") is True:
        out.append(("store", "store: true keeps the response at the provider"))
    if body.get("background") is True:
        out.append(("background", "background responses run and are polled at the provider"))
    if body.get("prompt") is not None:
        out.append(("prompt", "prompt templates are stored at the provider"))
    tools = body.get("tools")
    if isinstance(tools, list):
        for i, t in enumerate(tools):
            kind = t.get("type") if isinstance(t, dict) else None
            if kind != "function":
                out.append(
                    (f"tools[{i}]", f"tool type {str(kind)[:40]!r} is hosted by the provider")
                )
    inp = body.get("input")
    if isinstance(inp, list):
        for i, item in enumerate(inp):
            kind = item.get("type", "message") if isinstance(item, dict) else None
            if kind not in _STATELESS_ITEMS:
                out.append(
                    (
                        f"input[{i}]",
                        f"input item type {str(kind)[:40]!r} needs the provider's state",
                    )
                )
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") != "function":
        out.append(("tool_choice", "only auto, none, required or a function can be translated"))
    return out


def refuse_untranslatable(body: dict[str, Any], provider: str) -> None:
    found = refusals(body)
    if found:
        param, why = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise _bad(
            f"{param} cannot be translated for provider {provider!r}, which does not serve "
            f"the Responses API itself: {why}{more}",
            param,
        )


# --- request ---------------------------------------------------------------------


def _part(part: Any, param: str) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        raise _bad("a content part must be an object", param)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad(f"a {kind} part needs a string 'text'", f"{param}.text")
        return {"type": "text", "text": text}
    if kind == "refusal":
        text = part.get("refusal")
        return {"type": "text", "text": text} if isinstance(text, str) and text else None
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise _bad(
                "an input_image part needs image_url (a URL or data URL); file_id refers to "
                "a file stored at OpenAI",
                f"{param}.image_url",
            )
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        data = part.get("file_data")
        file: dict[str, Any] = {}
        if isinstance(data, str) and data:
            file["file_data"] = data
        elif isinstance(part.get("file_id"), str):
            file["file_id"] = part["file_id"]
        else:
            raise _bad("an input_file part needs file_data or file_id", param)
        if isinstance(part.get("filename"), str):
            file["filename"] = part["filename"]
        return {"type": "file", "file": file}
    raise _bad(f"content part type {str(kind)[:40]!r} cannot be translated", f"{param}.type")


def _content(content: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad("content must be a string or a list of parts", param)
    parts = [_part(p, f"{param}[{i}]") for i, p in enumerate(content)]
    kept = [p for p in parts if p is not None]
    if all(p["type"] == "text" for p in kept):
        # Plain text is what every chat server accepts, in any role.
        return "".join(p["text"] for p in kept)
    return kept


def _call(item: dict[str, Any], param: str) -> dict[str, Any]:
    call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments")
    if not isinstance(call_id, str) or not call_id:
        raise _bad("a function_call item needs call_id", f"{param}.call_id")
    if not isinstance(name, str) or not name:
        raise _bad("a function_call item needs name", f"{param}.name")
    if not isinstance(args, str):
        raise _bad("a function_call item needs arguments as a JSON string", f"{param}.arguments")
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _output(output: Any, param: str) -> str | list[dict[str, Any]]:
    if isinstance(output, str):
        return output
    return _content(output, param)


def messages(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Chat messages for a Responses body, and the Responses param each one came from."""
    out: list[dict[str, Any]] = []
    sources: list[str] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        out.append({"role": "system", "content": instructions})
        sources.append("instructions")
    elif instructions is not None and not isinstance(instructions, str):
        raise _bad("instructions must be a string", "instructions")
    inp = body.get("input")
    if isinstance(inp, str):
        out.append({"role": "user", "content": inp})
        sources.append("input")
        return out, sources
    if not isinstance(inp, list):
        raise _bad("input must be a string or a list of items", "input")
    for i, item in enumerate(inp):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad("an input item must be an object", param)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _bad(f"unknown role {str(role)[:40]!r}", f"{param}.role")
            # "developer" is OpenAI's; OpenAI-compatible servers know "system".
            chat_role = "system" if role == "developer" else role
            out.append(
                {"role": chat_role, "content": _content(item.get("content"), f"{param}.content")}
            )
            sources.append(param)
        elif kind == "function_call":
            call = _call(item, param)
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                # The calls of one turn join it, as chat puts them in one message.
                last.setdefault("tool_calls", []).append(call)
                if last.get("content") == "":
                    last["content"] = None
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
                sources.append(param)
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _bad("a function_call_output item needs call_id", f"{param}.call_id")
            content = _output(item.get("output"), f"{param}.output")
            out.append({"role": "tool", "tool_call_id": call_id, "content": content})
            sources.append(param)
        elif kind == "reasoning":
            continue  # the provider's own state, meaningless to another (module docstring)
        else:
            raise _bad(f"input item type {str(kind)[:40]!r} cannot be translated", f"{param}.type")
    if not out:
        raise _bad("input holds no message to send", "input")
    return out, sources


def _tools(tools: list[Any]) -> list[dict[str, Any]]:
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type") != "function":
            raise _bad("only function tools can be translated", f"tools[{i}]")
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("a function tool needs a name", f"tools[{i}].name")
        fn: dict[str, Any] = {"name": name}
        for key in ("description", "parameters", "strict"):
            if t.get(key) is not None:
                fn[key] = t[key]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "function", "function": {"name": name}}
    raise _bad("tool_choice must be auto, none, required or a function by name", "tool_choice")


def _response_format(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _bad("text must be an object", "text")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        assert isinstance(fmt, dict)
        spec = {k: fmt[k] for k in ("name", "description", "schema", "strict") if k in fmt}
        if not isinstance(spec.get("name"), str) or not isinstance(spec.get("schema"), dict):
            raise _bad("a json_schema format needs name and schema", "text.format")
        return {"type": "json_schema", "json_schema": spec}
    raise _bad("text.format must be text, json_object or json_schema", "text.format.type")


def _number(body: dict[str, Any], key: str) -> float | int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad(f"{key} must be a number", key)
    return value


def translate_request(
    body: dict[str, Any], model_id: str, provider: str
) -> tuple[dict[str, Any], list[str]]:
    """A Responses body → a chat completions body, and each message's Responses param."""
    refuse_untranslatable(body, provider)
    if body.get("top_logprobs"):
        raise _bad("top_logprobs cannot be translated to chat completions", "top_logprobs")
    msgs, sources = messages(body)
    out: dict[str, Any] = {"model": model_id, "messages": msgs}
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        out["tools"] = _tools(tools)
    elif tools is not None and not isinstance(tools, list):
        raise _bad("tools must be a list", "tools")
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None and ("tools" in out or choice == "none"):
        out["tool_choice"] = choice
    if isinstance(body.get("parallel_tool_calls"), bool) and "tools" in out:
        out["parallel_tool_calls"] = body["parallel_tool_calls"]
    limit = body.get("max_output_tokens")
    if limit is not None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise _bad("max_output_tokens must be a positive integer", "max_output_tokens")
        out["max_tokens"] = limit
    for key in ("temperature", "top_p"):
        value = _number(body, key)
        if value is not None:
            out[key] = value
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        out["response_format"] = fmt
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        out["reasoning_effort"] = reasoning["effort"]
    user = body.get("safety_identifier") or body.get("user")
    if isinstance(user, str) and user:
        out["user"] = user
    if body.get("stream") is True:
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, sources


# --- response --------------------------------------------------------------------


def responses_usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_creation_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.total_tokens,
    }


def echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request's settings as a Responses object repeats them."""
    text = body.get("text") if isinstance(body.get("text"), dict) else None
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": None,
        "reasoning": body.get("reasoning") if isinstance(body.get("reasoning"), dict) else None,
        "store": False,
        "temperature": body.get("temperature"),
        "text": text or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") if isinstance(body.get("tools"), list) else [],
        "top_p": body.get("top_p"),
        "truncation": body.get("truncation") or "disabled",
        "user": body.get("user"),
    }


def status_of(finish_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    status, reason = _STATUS.get(finish_reason or "", ("completed", None))
    return status, ({"reason": reason} if reason else None)


def response_object(
    request: dict[str, Any],
    *,
    response_id: str,
    created: int,
    model: str,
    status: str,
    incomplete: dict[str, Any] | None,
    output: list[dict[str, Any]],
    usage: Usage | None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        **echo(request),
        "usage": responses_usage(usage) if usage is not None else None,
    }


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": parts,
    }


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(item_id: str, call_id: str, name: str, args: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": args,
    }


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "status": status,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def translate_response(
    completion: dict[str, Any], request: dict[str, Any], usage: Usage | None, created: int
) -> dict[str, Any]:
    """A ``chat.completion`` → a Responses ``response`` object."""
    choices = completion.get("choices")
    choice = obj(choices[0]) if isinstance(choices, list) and choices else {}
    message = obj(choice.get("message"))
    output: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(new_id("rs"), reasoning))
    parts = []
    if isinstance(message.get("content"), str) and message["content"]:
        parts.append(text_part(message["content"]))
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append(message_item(new_id("msg"), parts, "completed"))
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        fn = obj(call).get("function")
        if isinstance(fn, dict):
            output.append(
                call_item(
                    new_id("fc"),
                    str(obj(call).get("id") or new_id("call")),
                    str(fn.get("name") or ""),
                    str(fn.get("arguments") or ""),
                    "completed",
                )
            )
    status, incomplete = status_of(choice.get("finish_reason"))
    return response_object(
        request,
        response_id=new_id("resp"),
        created=created,
        model=str(completion.get("model") or request.get("model") or ""),
        status=status,
        incomplete=incomplete,
        output=output,
        usage=usage,
    )

"""Anthropic Messages client → OpenAI chat completions provider.

The reverse of ``openai_anthropic``. Request: ``system`` (a string or text
blocks) becomes one system message; ``tool_result`` blocks become ``tool``
messages placed before the rest of their user turn; ``tool_use`` blocks become
``tool_calls``; images and PDFs become data URLs; ``thinking`` becomes
``reasoning_effort`` on models configured with ``reasoning: true``.
``cache_control`` is dropped everywhere (OpenAI caches prompts by itself), as
are ``top_k`` (no OpenAI equivalent), earlier turns' thinking blocks (OpenAI
takes no reasoning as input) and settings that change nothing the client
relies on (``service_tier``, ``speed``, ``container`` ...). What would change
the answer and cannot be sent (server tools, files by id, PDFs by URL, more
than four stop sequences) is refused with a 400 naming the field.

Response: one choice becomes one message; reasoning text, where an
OpenAI-compatible server returns it (``reasoning_content`` or ``reasoning``),
becomes a thinking block with an empty signature; usage splits cached prompt
tokens out of ``input_tokens`` as Anthropic reports them. The stream is in
``anthropic_openai_stream``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import GatewayError, anthropic_error_body, anthropic_type, clip
from ..sse import Event
from ..usage import Usage
from .anthropic_openai_stream import (
    STOP_REASONS,
    StreamTranslator,
    anthropic_usage,
    parse_chunk,
    reasoning_text,
    usage_from,
)
from .exchange import META_CHARS, Exchange, Outbound, dumps, error_text, read_meta

# OpenAI refuses a request with more stop sequences than this, or a longer user.
MAX_STOP = 4
MAX_USER = 64
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
# Thinking budgets → OpenAI's reasoning_effort: under 4k tokens is a light
# think, under 16k a medium one, anything above is Anthropic's "think hard".
EFFORT_BY_BUDGET = ((4096, "low"), (16384, "medium"))
EFFORTS = frozenset({"low", "medium", "high", "xhigh", "max"})
def _bad(message: str, param: str) -> GatewayError:
    # Anthropic errors have no `param`: the message names the field.
    return GatewayError(400, f"{param}: {message}", code="unsupported_for_provider", param=param)


# --- request -------------------------------------------------------------------


def _text(block: dict[str, Any], param: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise _bad("a text block needs a string 'text'", f"{param}.text")
    return text


def _image(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad("an image block needs a source", f"{param}.source")
    kind = source.get("type")
    if kind == "base64":
        media, data = source.get("media_type"), source.get("data")
        if media not in IMAGE_TYPES or not isinstance(data, str):
            raise _bad(
                f"a base64 image needs data and a media_type of {sorted(IMAGE_TYPES)}",
                f"{param}.source",
            )
        url = f"data:{media};base64,{data}"
    elif kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise _bad(
            f"image source {clip(str(kind), 40)} cannot be sent to OpenAI providers; "
            "use base64 or url",
            f"{param}.source.type",
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _document(block: dict[str, Any], param: str) -> list[dict[str, Any]]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad("a document block needs a source", f"{param}.source")
    kind = source.get("type")
    title = block.get("title") if isinstance(block.get("title"), str) else None
    if kind == "base64" and source.get("media_type") == "application/pdf":
        data = source.get("data")
        if not isinstance(data, str):
            raise _bad("a base64 document needs data", f"{param}.source.data")
        name = title or "document.pdf"
        file = {"filename": name, "file_data": f"data:application/pdf;base64,{data}"}
        return [{"type": "file", "file": file}]
    if kind == "text" and isinstance(source.get("data"), str):
        text = source["data"] if title is None else f"{title}\n\n{source['data']}"
        return [{"type": "text", "text": text}]
    if kind == "content" and isinstance(source.get("content"), list | str):
        return _user_parts(source["content"], f"{param}.source.content")
    raise _bad(
        "OpenAI providers take documents as base64 PDF, text or content only "
        "(not by URL or file id)",
        f"{param}.source",
    )


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    """Text, image and document blocks → OpenAI user content parts."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise _bad("content must be a string or a list of blocks", param)
    return [p for i, block in enumerate(content) for p in _user_block(block, f"{param}[{i}]")]


def _user_block(block: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(block, dict):
        raise _bad("a content block must be an object", where)
    kind = block.get("type")
    if kind == "text":
        text = _text(block, where)
        return [{"type": "text", "text": text}] if text else []
    if kind == "image":
        return [_image(block, where)]
    if kind == "document":
        return _document(block, where)
    if kind in ("thinking", "redacted_thinking"):
        return []  # OpenAI takes no reasoning as input
    raise _bad(
        f"content block type {clip(str(kind), 40)} is not supported by OpenAI providers",
        f"{where}.type",
    )


def _tool_message(block: dict[str, Any], param: str) -> tuple[dict[str, Any], list[Any]]:
    """A tool_result → a tool message, and the images it held (OpenAI tool messages are text)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad("a tool_result needs tool_use_id", f"{param}.tool_use_id")
    parts = _user_parts(block.get("content") or [], f"{param}.content")
    text = "\n".join(p["text"] for p in parts if p["type"] == "text")
    media = [p for p in parts if p["type"] != "text"]
    if block.get("is_error") is True:
        # OpenAI has no error flag on a tool result: the model reads it instead.
        text = f"Error: {text}" if text else "Error"
    return {"role": "tool", "tool_call_id": call_id, "content": text}, media


def _user_turn(content: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        plain = _user_parts(content, param)
        return [{"role": "user", "content": _compact(plain)}] if plain else []
    # Tool results answer the previous assistant turn's calls: OpenAI wants
    # them right after it, so they go first, the rest of the turn after.
    tools: list[dict[str, Any]] = []
    media: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        if isinstance(block, dict) and block.get("type") == "tool_result":
            message, images = _tool_message(block, f"{param}[{i}]")
            tools.append(message)
            media += images
        else:
            parts += _user_block(block, f"{param}[{i}]")
    if media:
        call_ids = ", ".join(t["tool_call_id"] for t in tools)
        parts = [{"type": "text", "text": f"(attached by tool results {call_ids})"}, *media, *parts]
    out = tools
    if parts:
        out = [*tools, {"role": "user", "content": _compact(parts)}]
    return out


def _compact(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # Plain text as a string: every OpenAI-compatible server takes that form.
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _assistant_turn(content: Any, param: str) -> dict[str, Any] | None:
    if isinstance(content, str):
        return {"role": "assistant", "content": content} if content else None
    if not isinstance(content, list):
        raise _bad("content must be a string or a list of blocks", param)
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        where = f"{param}[{i}]"
        if not isinstance(block, dict):
            raise _bad("a content block must be an object", where)
        kind = block.get("type")
        if kind == "text":
            text.append(_text(block, where))
        elif kind == "tool_use":
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise _bad("a tool_use block needs an id and a name", where)
            args = block.get("input")
            if not isinstance(args, dict):
                raise _bad("a tool_use input must be an object", f"{where}.input")
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args, ensure_ascii=False)},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # OpenAI takes no reasoning as input
        else:
            raise _bad(
                f"content block type {clip(str(kind), 40)} is not supported by OpenAI providers",
                f"{where}.type",
            )
    if not text and not calls:
        return None  # only thinking: nothing an OpenAI provider takes
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _system(system: Any) -> str | None:
    if system is None:
        return None
    if isinstance(system, str):
        return system or None
    if not isinstance(system, list):
        raise _bad("system must be a string or a list of text blocks", "system")
    texts = []
    for i, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _bad("system blocks must be text", f"system[{i}]")
        texts.append(_text(block, f"system[{i}]"))
    return "\n\n".join(t for t in texts if t) or None


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools must be a list", "tools")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _bad("a tool must be an object", f"tools[{i}]")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise _bad(
                f"server tool {clip(str(kind), 60)} runs on Anthropic's servers; "
                "OpenAI providers take custom tools only",
                f"tools[{i}].type",
            )
        name, schema = tool.get("name"), tool.get("input_schema")
        if not isinstance(name, str) or not isinstance(schema, dict):
            raise _bad("a tool needs a name and an input_schema object", f"tools[{i}]")
        fn: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            fn["description"] = tool["description"]
        if tool.get("strict") is True:
            fn["strict"] = True
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice: Any) -> tuple[Any, bool | None]:
    """Anthropic's tool_choice → OpenAI's, and parallel_tool_calls (None: the default)."""
    if not isinstance(choice, dict):
        raise _bad("tool_choice must be an object", "tool_choice")
    kind = choice.get("type")
    parallel = False if choice.get("disable_parallel_tool_use") is True else None
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", None
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}, parallel
    raise _bad("tool_choice type must be auto, any, tool (with a name) or none", "tool_choice")


def _effort(body: dict[str, Any], reasoning: bool) -> str | None:
    """The reasoning_effort for ``thinking`` / ``output_config.effort``, or None to send none."""
    thinking = body.get("thinking")
    if thinking is not None and not isinstance(thinking, dict):
        raise _bad("thinking must be an object", "thinking")
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if effort is not None and effort not in EFFORTS:
        raise _bad(f"effort must be one of {sorted(EFFORTS)}", "output_config.effort")
    if not reasoning:
        # The model takes no reasoning_effort (sending it is a 400 from OpenAI):
        # it answers without extended thinking, as a model without it does.
        return None
    if isinstance(effort, str):
        return effort
    if thinking is None or thinking.get("type") != "enabled":
        return None  # disabled, adaptive or absent: the model's own default
    budget = thinking.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise _bad("budget_tokens must be a positive integer", "thinking.budget_tokens")
    return next((e for limit, e in EFFORT_BY_BUDGET if budget < limit), "high")


def _response_format(config: Any) -> dict[str, Any] | None:
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _bad("format type must be json_schema", "output_config.format")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _bad("a json_schema format needs a schema object", "output_config.format.schema")
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


def _openai_user(user_id: str) -> str:
    """Anthropic's user_id as OpenAI's ``user``, which OpenAI caps at 64 characters.

    Claude Code sends about 150 (device, account and session ids): a longer id
    goes as its SHA-256, the same for the same id and as opaque as Anthropic
    asks the id to be.
    """
    if len(user_id) <= MAX_USER:
        return user_id
    return hashlib.sha256(user_id.encode("utf-8", "backslashreplace")).hexdigest()


def translate_request(
    body: dict[str, Any], model_id: str, *, reasoning: bool = False
) -> dict[str, Any]:
    """An Anthropic Messages body → an OpenAI chat completions body.

    ``reasoning``: the model takes ``reasoning_effort`` (config ``reasoning: true``).
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "messages")
    if body.get("mcp_servers"):
        raise _bad(
            "MCP servers are called by Anthropic's API; not by OpenAI providers", "mcp_servers"
        )
    out: dict[str, Any] = {"model": model_id, "messages": []}
    system = _system(body.get("system"))
    if system is not None:
        out["messages"].append({"role": "system", "content": system})
    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad("a message must be an object", param)
        role = m.get("role")
        if role == "user":
            out["messages"] += _user_turn(m.get("content"), f"{param}.content")
        elif role == "assistant":
            turn = _assistant_turn(m.get("content"), f"{param}.content")
            if turn is not None:
                out["messages"].append(turn)
        else:
            raise _bad(
                f"role must be user or assistant, not {clip(str(role), 40)}", f"{param}.role"
            )

    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        # max_tokens is refused by OpenAI's reasoning models; this one is not.
        out["max_completion_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = value
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("stop_sequences must be a list of strings", "stop_sequences")
        if len(stop) > MAX_STOP:
            raise _bad(
                f"OpenAI providers take at most {MAX_STOP} stop sequences, got {len(stop)}",
                "stop_sequences",
            )
        if stop:
            out["stop"] = stop
    tools = body.get("tools")
    if tools:
        out["tools"] = _tools(tools)
    if body.get("tool_choice") is not None:
        choice, parallel = _tool_choice(body["tool_choice"])
        if tools or choice == "none":
            out["tool_choice"] = choice
            if parallel is not None and tools:
                out["parallel_tool_calls"] = parallel
    effort = _effort(body, reasoning)
    if effort is not None:
        out["reasoning_effort"] = effort
    fmt = _response_format(body.get("output_config"))
    if fmt is not None:
        out["response_format"] = fmt
    metadata = body.get("metadata")
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user, str) and user:
        out["user"] = _openai_user(user)
    if body.get("stream") is True:
        out["stream"] = True
        # Usage comes in a last chunk only when asked for; sidegate counts it.
        out["stream_options"] = {"include_usage": True}
    return out


# --- response ------------------------------------------------------------------


def translate_response(body: dict[str, Any]) -> tuple[dict[str, Any], Usage | None]:
    """An OpenAI chat.completion → an Anthropic Messages response."""
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    message = message if isinstance(message, dict) else {}
    content: list[dict[str, Any]] = []
    thinking = reasoning_text(message)
    if thinking:
        content.append({"type": "thinking", "thinking": thinking, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": fn.get("name"),
                "input": tool_input(fn.get("arguments")),
            }
        )
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    stop_reason = "refusal" if refusal else STOP_REASONS.get(str(finish), "end_turn")
    usage = usage_from(body.get("usage"))
    out = {
        "id": body.get("id"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }
    return out, usage


def translate_error(status: int, body: bytes, provider: str) -> bytes:
    """An OpenAI error body → Anthropic error JSON, the status kept."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return dumps(anthropic_error_body(err["message"], anthropic_type(status)))
    message = f"provider {provider!r} answered {status}: {error_text(body) or 'no body'}"
    return dumps(anthropic_error_body(message, anthropic_type(status)))


def tool_input(arguments: Any) -> dict[str, Any]:
    """A call's arguments as the object Anthropic's ``input`` is (``{}`` if they are not one)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        parsed = {}
    return parsed if isinstance(parsed, dict) else {}


class AnthropicToOpenAI(Exchange):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stream = StreamTranslator(self.ctx.model.id)

    def request(self) -> Outbound:
        ctx = self.ctx
        body = translate_request(ctx.body, ctx.model.id, reasoning=ctx.model.reasoning)
        limit = ctx.model.max_output_tokens
        if limit is not None and body.get("max_completion_tokens", 0) > limit:
            body["max_completion_tokens"] = limit
        return Outbound(path=ctx.provider.base_path + "/chat/completions", body=dumps(body))

    def json_response(self, body: dict[str, Any]) -> bytes:
        out, self.usage = translate_response(body)
        choices = body.get("choices")
        found = [c.get("finish_reason") for c in choices or [] if isinstance(c, dict)]
        read_meta(self, body, [r for r in found if isinstance(r, str) and r])
        return dumps(out)

    def stream_event(self, event: Event) -> bytes:
        if event.is_comment:
            return self._stream.ping()
        if event.data.strip() == "[DONE]":
            return self._stream.stop()
        chunk = parse_chunk(event.data)
        if chunk is None:
            return b""
        first = not self._stream.started
        out = self._stream.chunk(chunk)
        self.usage = self._stream.usage
        if first:
            read_meta(self, chunk)
        if self._stream.finish is not None:
            self.finish_reasons = [self._stream.finish[:META_CHARS]]
        return out

    def stream_end(self, pending: bytes) -> bytes:
        return self._stream.end()

    def error(self, status: int, body: bytes) -> bytes:
        return translate_error(status, body, self.ctx.provider.name)

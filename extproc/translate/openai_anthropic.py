"""OpenAI chat completions client → Anthropic Messages provider.

Request: system and developer messages become ``system``; tool results become
``tool_result`` blocks in a user turn; consecutive turns of one role merge
(Anthropic wants them alternating); images as data URLs become base64 blocks;
``max_tokens`` is required, so a configured default fills it in; temperature is
clamped to Anthropic's 0 to 1. Response: content blocks become one message with
``tool_calls``; thinking goes to ``reasoning_content`` (the field OpenAI-compatible
servers use); usage counts cache reads and writes as prompt tokens.
Streams are rewritten event by event into ``chat.completion.chunk`` objects.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .. import validation
from ..config import StructuredOutputs
from ..errors import GatewayError, openai_error_body, openai_type
from ..sse import Event
from ..usage import Usage
from .anthropic_anthropic import stop_reasons, usage_from
from .anthropic_structured import output_format, tool_choice
from .exchange import Exchange, Outbound, dumps, error_text, read_meta

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

# OpenAI parameters with no Anthropic equivalent that change nothing a client
# relies on (penalties, seed, logit_bias, service_tier, store, metadata, ...) are
# dropped; the ones that would change the answer (n > 1, logprobs,
# reasoning_effort) are refused with a 400 that names them. response_format
# becomes structured output (``anthropic_structured``).


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, code="unsupported_for_provider", param=param)


# --- request -------------------------------------------------------------------


def _data_url(url: str, param: str) -> tuple[str, str]:
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise _bad("expected a data URL such as data:image/png;base64,...", param)
    return head[5:-7], data


def _part(part: Any, param: str) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        raise _bad("a content part must be an object", param)
    kind = part.get("type")
    block: dict[str, Any]
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad("a text part needs a string 'text'", f"{param}.text")
        if not text:
            return None  # Anthropic rejects empty text blocks
        block = {"type": "text", "text": text}
    elif kind == "image_url":
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else spec
        if not isinstance(url, str):
            raise _bad("an image_url part needs image_url.url", f"{param}.image_url")
        if url.startswith("data:"):
            media, data = _data_url(url, f"{param}.image_url.url")
            if media not in IMAGE_TYPES:
                raise _bad(
                    f"image type {media!r} is not supported; use one of {sorted(IMAGE_TYPES)}",
                    f"{param}.image_url.url",
                )
            block = {
                "type": "image",
                "source": {"type": "base64", "media_type": media, "data": data},
            }
        elif url.startswith(("https://", "http://")):
            block = {"type": "image", "source": {"type": "url", "url": url}}
        else:
            raise _bad("an image URL must be https:// or a data URL", f"{param}.image_url.url")
    elif kind == "file":
        spec = part.get("file")
        data_url = spec.get("file_data") if isinstance(spec, dict) else None
        if not isinstance(data_url, str):
            raise _bad("a file part needs file.file_data as a data URL", f"{param}.file")
        media, data = _data_url(data_url, f"{param}.file.file_data")
        if media != "application/pdf":
            raise _bad(f"file type {media!r} is not supported; only PDF", f"{param}.file")
        block = {
            "type": "document",
            "source": {"type": "base64", "media_type": media, "data": data},
        }
    elif kind == "refusal":
        text = part.get("refusal")
        if not isinstance(text, str) or not text:
            return None
        block = {"type": "text", "text": text}
    else:
        raise _bad(f"content part type {kind!r} is not supported by Anthropic providers", param)
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list):
        blocks = [_part(p, f"{param}[{i}]") for i, p in enumerate(content)]
        return [b for b in blocks if b is not None]
    raise _bad("content must be a string or a list of parts", param)


def _tool_use(call: Any, param: str) -> dict[str, Any]:
    if not isinstance(call, dict) or call.get("type", "function") != "function":
        raise _bad("only function tool calls are supported", param)
    fn = call.get("function")
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise _bad("a tool call needs function.name", f"{param}.function")
    args = fn.get("arguments") or "{}"
    # Parsed under the request body's checks (depth, duplicate keys, lone
    # surrogates): this JSON is the client's too, and it goes out re-encoded.
    parsed = (
        validation.loads_embedded(args, f"{param}.function.arguments")
        if isinstance(args, str)
        else args
    )
    if not isinstance(parsed, dict):
        raise _bad("tool call arguments must be a JSON object", f"{param}.function.arguments")
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad("a tool call needs an id", f"{param}.id")
    return {"type": "tool_use", "id": call_id, "name": fn["name"], "input": parsed}


def _messages(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(m, dict):
            raise _bad("a message must be an object", param)
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            blocks = _blocks(content, f"{param}.content")
            if any(b["type"] != "text" for b in blocks):
                raise _bad("system messages may hold text only", f"{param}.content")
            system.extend(blocks)
            continue
        if role == "user":
            blocks = _blocks(content, f"{param}.content")
            if not blocks:
                raise _bad("a user message needs non-empty content", f"{param}.content")
        elif role == "assistant":
            blocks = _blocks(content, f"{param}.content")
            if isinstance(m.get("refusal"), str) and m["refusal"] and not blocks:
                blocks = [{"type": "text", "text": m["refusal"]}]
            calls = m.get("tool_calls") or []
            if not isinstance(calls, list):
                raise _bad("tool_calls must be a list", f"{param}.tool_calls")
            blocks += [_tool_use(c, f"{param}.tool_calls[{j}]") for j, c in enumerate(calls)]
            if not blocks:
                continue  # an empty assistant turn carries nothing Anthropic accepts
        elif role == "tool":
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _bad("a tool message needs tool_call_id", f"{param}.tool_call_id")
            result = _blocks(content, f"{param}.content")
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
            if result:
                block["content"] = result
            role, blocks = "user", [block]
        elif role == "function":
            raise _bad(
                "the deprecated 'function' role is not supported; use 'tool'", f"{param}.role"
            )
        else:
            raise _bad(f"unknown role {role!r}", f"{param}.role")
        if turns and turns[-1]["role"] == role:
            # Anthropic wants alternating turns; several OpenAI tool messages in a
            # row are one user turn of tool results.
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools must be a list", "tools")
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) and t.get("type") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _bad("only function tools with a name are supported", f"tools[{i}]")
        tool: dict[str, Any] = {
            "name": fn["name"],
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(fn.get("description"), str):
            tool["description"] = fn["description"]
        if isinstance(t.get("cache_control"), dict):
            tool["cache_control"] = t["cache_control"]
        out.append(tool)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("function"), dict)
        and isinstance(choice["function"].get("name"), str)
    ):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise _bad("tool_choice must be auto, none, required or a function", "tool_choice")
    if parallel is False:
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def translate_request(
    body: dict[str, Any],
    model_id: str,
    default_max_tokens: int,
    structured: StructuredOutputs = StructuredOutputs.TOOL,
) -> dict[str, Any]:
    """An OpenAI chat completions body → an Anthropic Messages body."""
    return translate_request_and_output_tool(body, model_id, default_max_tokens, structured)[0]


def translate_request_and_output_tool(
    body: dict[str, Any],
    model_id: str,
    default_max_tokens: int,
    structured: StructuredOutputs = StructuredOutputs.TOOL,
) -> tuple[dict[str, Any], str | None]:
    """The Anthropic body, and the name of the tool that carries a structured answer."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "messages")
    n = body.get("n")
    if n not in (None, 1):
        raise _bad("Anthropic providers return one choice; n must be 1", "n")
    if body.get("logprobs") is True:
        raise _bad("logprobs are not available from Anthropic providers", "logprobs")
    if body.get("reasoning_effort") is not None:
        raise _bad(
            "reasoning_effort is not supported for Anthropic providers yet", "reasoning_effort"
        )

    system, turns = _messages(messages)
    out: dict[str, Any] = {"model": model_id}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("max_tokens must be a positive integer", "max_tokens")
    out["max_tokens"] = max_tokens
    if system:
        out["system"] = system
    out["messages"] = turns

    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = min(max(float(temperature), 0.0), 1.0)
    top_p = body.get("top_p")
    if isinstance(top_p, int | float) and not isinstance(top_p, bool):
        out["top_p"] = top_p
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop:
        if not all(isinstance(s, str) for s in stop):
            raise _bad("stop must be a string or a list of strings", "stop")
        out["stop_sequences"] = stop
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and (out.get("tools") or choice["type"] == "none"):
        out["tool_choice"] = choice
    fmt = output_format(body.get("response_format"), structured, out.get("tools", []))
    if fmt is not None and fmt.tool is not None:
        client_tools = out.get("tools", [])
        out["tools"] = [*client_tools, fmt.tool]
        out["tool_choice"] = tool_choice(
            out.get("tool_choice"), bool(client_tools), fmt.tool["name"]
        )
    elif fmt is not None:
        out["output_config"] = fmt.output_config
    if isinstance(body.get("user"), str) and body["user"]:
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream") is True:
        out["stream"] = True
    return out, fmt.tool_name if fmt is not None else None


# --- response ------------------------------------------------------------------


def openai_usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
    }


def translate_response(
    msg: dict[str, Any], created: int, output_tool: str | None = None
) -> tuple[dict[str, Any], Usage | None]:
    """An Anthropic Messages response → an OpenAI chat.completion.

    ``output_tool`` names the tool that carries a structured answer: its input
    is the message content, not a tool call.
    """
    text: list[str] = []
    answer: str | None = None
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            text.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif kind == "tool_use" and output_tool is not None and block.get("name") == output_tool:
            answer = json.dumps(block.get("input") or {}, ensure_ascii=False)
        elif kind == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False),
                    },
                }
            )
    if answer is not None:
        text = [answer]  # anything the model wrote beside its answer would spoil the JSON
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    usage = usage_from(msg.get("usage"))
    out: dict[str, Any] = {
        "id": msg.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": msg.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish(msg.get("stop_reason"), answer is not None and not calls),
            }
        ],
    }
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out, usage


def _finish(stop_reason: Any, answered: bool) -> str:
    if answered and stop_reason == "tool_use":
        return "stop"  # the output tool was the answer, not a call to run
    return FINISH_REASONS.get(str(stop_reason), "stop")


def translate_error(status: int, body: bytes, provider: str) -> bytes:
    """An Anthropic error body → OpenAI error JSON, the status kept."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        kind = str(err.get("type") or openai_type(status))
        return dumps(openai_error_body(err["message"], kind, code=kind))
    message = f"provider {provider!r} answered {status}: {error_text(body) or 'no body'}"
    return dumps(openai_error_body(message, openai_type(status), code="upstream_error"))


class StreamTranslator:
    """Anthropic Messages SSE → OpenAI ``chat.completion.chunk`` SSE, event by event."""

    def __init__(
        self, *, include_usage: bool, created: int, output_tool: str | None = None
    ) -> None:
        self.include_usage = include_usage
        self.output_tool = output_tool
        # Content block indexes of the output tool: their input is the answer.
        self._answer_blocks: set[int] = set()
        self.created = created
        self.id = ""
        self.model = ""
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False
        # Anthropic numbers every content block; OpenAI numbers tool calls only.
        self._tool_index: dict[int, int] = {}

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + dumps(chunk) + b"\n\n"

    def event(self, name: str | None, data: dict[str, Any]) -> bytes:
        if name == "message_start":
            msg = data.get("message") or {}
            self.id = str(msg.get("id", ""))
            self.model = str(msg.get("model", ""))
            self.usage = usage_from(msg.get("usage"), self.usage)
            return self._chunk({"role": "assistant", "content": ""})
        if name == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use" and self.output_tool is not None and (
                block.get("name") == self.output_tool
            ):
                self._answer_blocks.add(data.get("index", 0))
                return b""
            if block.get("type") == "tool_use":
                index = self._tool_index.setdefault(data.get("index", 0), len(self._tool_index))
                return self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": block.get("id"),
                                "type": "function",
                                "function": {"name": block.get("name"), "arguments": ""},
                            }
                        ]
                    }
                )
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return b""
        if name == "content_block_delta":
            delta = data.get("delta") or {}
            kind = delta.get("type")
            if kind == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if kind == "input_json_delta" and data.get("index", 0) in self._answer_blocks:
                return self._chunk({"content": delta.get("partial_json", "")})
            if kind == "input_json_delta":
                index = self._tool_index.get(data.get("index", 0), 0)
                return self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "function": {"arguments": delta.get("partial_json", "")},
                            }
                        ]
                    }
                )
            if kind == "thinking_delta":
                return self._chunk({"reasoning_content": delta.get("thinking", "")})
            return b""  # signature_delta and future kinds carry nothing for OpenAI clients
        if name == "message_delta":
            self.usage = usage_from(data.get("usage"), self.usage)
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                answered = bool(self._answer_blocks) and not self._tool_index
                self.finish_reason = _finish(reason, answered)
                return self._chunk({}, self.finish_reason)
            return b""
        if name == "message_stop":
            return self._end()
        if name == "error":
            err = data.get("error") or {}
            kind = str(err.get("type") or "api_error")
            body = openai_error_body(str(err.get("message") or "provider error"), kind, code=kind)
            self.done = True
            return b"data: " + dumps(body) + b"\n\n"
        if name == "ping":
            return b": ping\n\n"  # keeps idle timers of proxies in between from firing
        return b""

    def _end(self) -> bytes:
        if self.done:
            return b""
        self.done = True
        out = b""
        if self.include_usage and self.usage is not None:
            chunk = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": openai_usage(self.usage),
            }
            out += b"data: " + dumps(chunk) + b"\n\n"
        return out + b"data: [DONE]\n\n"

    def end(self) -> bytes:
        if self.done:
            return b""
        # The provider closed the stream without message_stop: say so rather
        # than end as if the answer were complete.
        self.done = True
        body = openai_error_body(
            "the provider's stream ended before the message was complete",
            "server_error",
            code="stream_truncated",
        )
        return b"data: " + dumps(body) + b"\n\n"


class OpenAIToAnthropic(Exchange):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created = int(time.time())
        self._stream = StreamTranslator(include_usage=self.ctx.include_usage, created=self.created)
        self.output_tool: str | None = None

    @classmethod
    def refusal(cls, body: dict[str, Any], structured: StructuredOutputs) -> GatewayError | None:
        try:
            translate_request(body, "", 1, structured)
        except GatewayError as e:
            return e
        return None

    def request(self) -> Outbound:
        ctx = self.ctx
        body, self.output_tool = translate_request_and_output_tool(
            ctx.body, ctx.model.id, ctx.defaults.anthropic_max_tokens, ctx.model.structured_outputs
        )
        self._stream.output_tool = self.output_tool
        limit = ctx.model.max_output_tokens
        if limit is not None and body["max_tokens"] > limit:
            body["max_tokens"] = limit
        return Outbound(path=ctx.provider.base_path + "/v1/messages", body=dumps(body))

    def json_response(self, body: dict[str, Any]) -> bytes:
        out, self.usage = translate_response(body, self.created, self.output_tool)
        read_meta(self, body, stop_reasons(body))
        if self.text is not None:
            for block in body.get("content") or []:
                if isinstance(block, dict) and block.get("type") == "text":
                    self.keep_text(block.get("text"))
        return dumps(out)

    def stream_event(self, event: Event) -> bytes:
        if not event.data:
            return b""
        try:
            data = json.loads(event.data)
        except ValueError:
            return b""
        if not isinstance(data, dict):
            return b""
        name = event.event or data.get("type")
        out = self._stream.event(name, data)
        self.usage = self._stream.usage
        if name == "message_start" and isinstance(data.get("message"), dict):
            read_meta(self, data["message"])
        elif name == "message_delta" and (reasons := stop_reasons(data.get("delta"))):
            self.finish_reasons = reasons
        elif name == "content_block_delta" and self.text is not None:
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                self.keep_text(delta.get("text"))
        return out

    def stream_end(self, pending: bytes) -> bytes:
        return self._stream.end()

    def error(self, status: int, body: bytes) -> bytes:
        return translate_error(status, body, self.ctx.provider.name)

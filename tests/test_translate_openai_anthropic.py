"""Table tests: OpenAI chat completions ⇄ Anthropic Messages, on realistic wire examples."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extproc.errors import GatewayError
from extproc.sse import SSEDecoder
from extproc.translate.openai_anthropic import (
    StreamTranslator,
    translate_error,
    translate_request,
    translate_response,
)

REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "system, developer and multi-turn; default max_tokens",
        {
            "model": "smart",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"},
            ],
        },
        {
            "model": "claude-x",
            "max_tokens": 4096,
            "system": [
                {"type": "text", "text": "You are terse."},
                {"type": "text", "text": "No emoji."},
            ],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
                {"role": "user", "content": [{"type": "text", "text": "Bye"}]},
            ],
        },
    ),
    (
        "tools, tool_choice required, parallel_tool_calls false, sampling",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Get weather",
                        "parameters": {
                            "type": "object",
                            "properties": {"city": {"type": "string"}},
                        },
                    },
                }
            ],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "temperature": 2,
            "top_p": 0.9,
            "stop": ["\n\nHuman:", "END"],
            "max_tokens": 100,
            "user": "u-42",
            "seed": 1,
            "presence_penalty": 0.5,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        {
            "model": "claude-x",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather?"}]}],
            "temperature": 1.0,
            "top_p": 0.9,
            "stop_sequences": ["\n\nHuman:", "END"],
            "tools": [
                {
                    "name": "get_weather",
                    "description": "Get weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "metadata": {"user_id": "u-42"},
            "stream": True,
        },
    ),
    (
        "assistant tool calls and consecutive tool results merge into one user turn",
        {
            "model": "m",
            "max_completion_tokens": 20,
            "messages": [
                {"role": "user", "content": "Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "w", "arguments": '{"city":"Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "rain"}],
                },
            ],
            "tools": [{"type": "function", "function": {"name": "w"}}],
            "tool_choice": {"type": "function", "function": {"name": "w"}},
        },
        {
            "model": "claude-x",
            "max_tokens": 20,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Paris and Rome?"}]},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "w",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "call_2",
                            "name": "w",
                            "input": {"city": "Rome"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_1",
                            "content": [{"type": "text", "text": "sunny"}],
                        },
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_2",
                            "content": [{"type": "text", "text": "rain"}],
                        },
                    ],
                },
            ],
            "tools": [{"name": "w", "input_schema": {"type": "object", "properties": {}}}],
            "tool_choice": {"type": "tool", "name": "w"},
        },
    ),
    (
        "images: data URL to base64, https URL to url source; cache_control kept",
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare", "cache_control": {"type": "ephemeral"}},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": "data:image/jpeg;base64,/9j/4AAQ",
                                "detail": "high",
                            },
                        },
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    ],
                }
            ],
        },
        {
            "model": "claude-x",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare", "cache_control": {"type": "ephemeral"}},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/jpeg",
                                "data": "/9j/4AAQ",
                            },
                        },
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://example.com/cat.png"},
                        },
                    ],
                }
            ],
        },
    ),
]


@pytest.mark.parametrize(("name", "openai", "anthropic"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request(name: str, openai: dict[str, Any], anthropic: dict[str, Any]) -> None:
    assert translate_request(openai, "claude-x", 4096) == anthropic


BAD_REQUESTS = [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    (
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        "messages[0].content[0]",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}
                    ],
                }
            ]
        },
        "messages[0].content[0].image_url.url",
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{not json"},
                        }
                    ],
                }
            ]
        },
        "messages[0].tool_calls[0].function.arguments",
    ),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    (
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "xml"},
        },
        "response_format.type",
    ),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
]


@pytest.mark.parametrize(("body", "param"), BAD_REQUESTS, ids=[b[1] for b in BAD_REQUESTS])
def test_request_refusals_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as e:
        translate_request(body, "claude-x", 4096)
    assert e.value.status == 400 and e.value.param == param


RESPONSES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "text with cache usage",
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Hi!"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 5,
                "cache_read_input_tokens": 100,
                "output_tokens": 3,
            },
        },
        {
            "id": "msg_01",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "claude-sonnet-4-5",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi!", "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 115,
                "completion_tokens": 3,
                "total_tokens": 118,
                "prompt_tokens_details": {"cached_tokens": 100},
            },
        },
    ),
    (
        "thinking and a tool call",
        {
            "id": "msg_02",
            "type": "message",
            "role": "assistant",
            "model": "claude-opus-4-1",
            "content": [
                {"type": "thinking", "thinking": "Need weather.", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"city": "Oslo"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 20, "output_tokens": 7},
        },
        {
            "id": "msg_02",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "claude-opus-4-1",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "refusal": None,
                        "tool_calls": [
                            {
                                "id": "toolu_1",
                                "type": "function",
                                "function": {"name": "w", "arguments": '{"city": "Oslo"}'},
                            }
                        ],
                        "reasoning_content": "Need weather.",
                    },
                    "logprobs": None,
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": 20,
                "completion_tokens": 7,
                "total_tokens": 27,
                "prompt_tokens_details": {"cached_tokens": 0},
            },
        },
    ),
]


@pytest.mark.parametrize(("name", "anthropic", "openai"), RESPONSES, ids=[r[0] for r in RESPONSES])
def test_response(name: str, anthropic: dict[str, Any], openai: dict[str, Any]) -> None:
    out, usage = translate_response(anthropic, created=1700000000)
    assert out == openai
    assert usage is not None and usage.total_tokens == openai["usage"]["total_tokens"]


@pytest.mark.parametrize(
    "reason,finish",
    [
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    out, _ = translate_response({"content": [], "stop_reason": reason}, created=0)
    assert out["choices"][0]["finish_reason"] == finish


# A real Anthropic stream (as the API sends it), text then a tool call.
ANTHROPIC_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":10,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\": \\"Pa"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ris\\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"""


def _translate_stream(
    raw: bytes, split: int, include_usage: bool
) -> tuple[list[Any], StreamTranslator]:
    t = StreamTranslator(include_usage=include_usage, created=1)
    dec = SSEDecoder()
    out = b""
    for i in range(0, len(raw), split):  # arbitrary chunk boundaries, even mid-UTF-8
        for ev in dec.feed(raw[i : i + split]):
            out += t.event(ev.event, json.loads(ev.data))
    out += t.end()
    events = [line[6:] for line in out.decode().split("\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events], t


@pytest.mark.parametrize("split", [1, 7, 4096])
def test_stream(split: int) -> None:
    chunks, t = _translate_stream(ANTHROPIC_STREAM, split, include_usage=True)
    assert chunks[-1] == "[DONE]"
    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == {
        "prompt_tokens": 35,
        "completion_tokens": 89,
        "total_tokens": 124,
        "prompt_tokens_details": {"cached_tokens": 10},
    }
    deltas = [c["choices"][0]["delta"] for c in chunks[:-2]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Let me check"
    calls = [tc for d in deltas for tc in d.get("tool_calls", [])]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert chunks[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(c["id"] == "msg_1" and c["object"] == "chat.completion.chunk" for c in chunks[:-1])
    assert t.usage is not None and t.usage.output_tokens == 89  # cumulative: set, not added


def test_stream_without_usage_chunk_when_not_asked() -> None:
    chunks, _ = _translate_stream(ANTHROPIC_STREAM, 4096, include_usage=False)
    assert chunks[-1] == "[DONE]" and all(c["choices"] for c in chunks[:-1])


def test_truncated_stream_ends_with_an_error_not_done() -> None:
    cut = ANTHROPIC_STREAM[: ANTHROPIC_STREAM.index(b"event: message_delta")]
    chunks, _ = _translate_stream(cut, 4096, include_usage=True)
    # _translate_stream calls end(); without message_stop it must not claim completion.
    assert chunks[-1] != "[DONE]" and chunks[-1]["error"]["code"] == "stream_truncated"


def test_error_event_mid_stream() -> None:
    t = StreamTranslator(include_usage=False, created=1)
    out = t.event(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    assert json.loads(out[6:]) == {
        "error": {
            "message": "Overloaded",
            "type": "overloaded_error",
            "param": None,
            "code": "overloaded_error",
        }
    }
    assert t.end() == b""


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            429,
            b'{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}',
            {
                "message": "Number of request tokens has exceeded your per-minute rate limit",
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limit_error",
            },
        ),
        (
            502,
            b"<html>Bad Gateway</html>",
            {
                "message": "provider 'p' answered 502: <html>Bad Gateway</html>",
                "type": "server_error",
                "param": None,
                "code": "upstream_error",
            },
        ),
    ],
)
def test_error(status: int, body: bytes, expected: dict[str, Any]) -> None:
    assert json.loads(translate_error(status, body, "p")) == {"error": expected}

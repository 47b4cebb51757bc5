"""Table tests: Anthropic Messages ⇄ OpenAI chat completions, on realistic wire examples.

Every translated response and stream event is also validated against the
official anthropic SDK's types, so a misspelt field fails here.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic.types as at
import pydantic
import pytest

from extproc.apis import ClientApi
from extproc.config import parse_config
from extproc.errors import GatewayError
from extproc.sse import SSEDecoder
from extproc.translate import AttemptContext, exchange_for
from extproc.translate.anthropic_openai import (
    translate_error,
    translate_request,
    translate_response,
)
from extproc.translate.anthropic_openai_stream import StreamTranslator

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the weather",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
OPENAI_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": WEATHER_TOOL["input_schema"],
        "description": "Get the weather",
    },
}

REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "system_string_sampling_stop_user_top_k_dropped",
        {
            "model": "smart",
            "max_tokens": 1024,
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": [{"type": "text", "text": "Bye"}]},
            ],
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["\n\nHuman:"],
            "metadata": {"user_id": "u-42"},
            "service_tier": "auto",
        },
        {
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"},
            ],
            "max_completion_tokens": 1024,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": ["\n\nHuman:"],
            "user": "u-42",
        },
    ),
    (
        "system_blocks_cache_control_dropped_stream_asks_usage",
        {
            "model": "m",
            "max_tokens": 10,
            "stream": True,
            "system": [
                {"type": "text", "text": "You are Claude Code."},
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
                    ],
                }
            ],
        },
        {
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "You are Claude Code.\n\nBe brief."},
                {"role": "user", "content": "x"},
            ],
            "max_completion_tokens": 10,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    (
        "tool_round_trip_any_no_parallel_thinking_history_dropped",
        {
            "model": "m",
            "max_tokens": 100,
            "tools": [dict(WEATHER_TOOL, cache_control={"type": "ephemeral"})],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "call_2",
                            "name": "get_weather",
                            "input": {"city": "Rome"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "call_2",
                            "content": [{"type": "text", "text": "no such city"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "Summarise."},
                    ],
                },
            ],
        },
        {
            "model": "gpt-x",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": "Error: no such city"},
                {"role": "user", "content": "Summarise."},
            ],
            "max_completion_tokens": 100,
            "tools": [OPENAI_WEATHER_TOOL],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
    ),
    (
        "tool_choice_named_tool_and_none",
        {
            "model": "m",
            "max_tokens": 5,
            "tools": [dict(WEATHER_TOOL, strict=True)],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "messages": [{"role": "user", "content": "x"}],
        },
        {
            "model": "gpt-x",
            "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 5,
            "tools": [
                {
                    "type": "function",
                    "function": dict(OPENAI_WEATHER_TOOL["function"], strict=True),  # type: ignore[arg-type]
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        },
    ),
    (
        "images_base64_and_url_pdf_and_text_documents",
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                        {
                            "type": "document",
                            "title": "report.pdf",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBERi0x",
                            },
                        },
                        {
                            "type": "document",
                            "title": "Notes",
                            "source": {"type": "text", "media_type": "text/plain", "data": "a b"},
                        },
                        {"type": "text", "text": "Compare."},
                    ],
                }
            ],
        },
        {
            "model": "gpt-x",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                        {
                            "type": "file",
                            "file": {
                                "filename": "report.pdf",
                                "file_data": "data:application/pdf;base64,JVBERi0x",
                            },
                        },
                        {"type": "text", "text": "Notes\n\na b"},
                        {"type": "text", "text": "Compare."},
                    ],
                }
            ],
            "max_completion_tokens": 5,
        },
    ),
    (
        "image_in_tool_result_follows_as_user_content",
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [
                                {"type": "text", "text": "screenshot:"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/jpeg",
                                        "data": "/9j/",
                                    },
                                },
                            ],
                        }
                    ],
                },
            ],
        },
        {
            "model": "gpt-x",
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "shot", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "screenshot:"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "(attached by tool results toolu_1)"},
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
                    ],
                },
            ],
            "max_completion_tokens": 5,
        },
    ),
    (
        "structured_output_format_to_response_format",
        {
            "model": "m",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "A person"}],
            "output_config": {
                "format": {
                    "type": "json_schema",
                    "schema": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"],
                        "additionalProperties": False,
                    },
                }
            },
        },
        {
            "model": "gpt-x",
            "messages": [{"role": "user", "content": "A person"}],
            "max_completion_tokens": 50,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "output",
                    "schema": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}},
                        "required": ["name"],
                        "additionalProperties": False,
                    },
                    "strict": True,
                },
            },
        },
    ),
]


@pytest.mark.parametrize(("name", "anthropic", "openai"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request(name: str, anthropic: dict[str, Any], openai: dict[str, Any]) -> None:
    assert translate_request(anthropic, "gpt-x") == openai


def test_long_user_id_goes_hashed() -> None:
    # Claude Code's user_id; OpenAI refuses a `user` over 64 characters.
    claude_code = (
        '{"device_id":"' + "ab" * 32 + '","account_uuid":"3f1c2d4e-0000-4000-8000-000000000001",'
        '"session_id":"9a8b7c6d-0000-4000-8000-000000000002"}'
    )
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    sent = translate_request({**body, "metadata": {"user_id": claude_code}}, "gpt-x")["user"]
    assert len(sent) == 64 and sent != claude_code[:64]
    again = translate_request({**body, "metadata": {"user_id": claude_code}}, "gpt-x")["user"]
    assert sent == again  # stable: the same caller is the same user to the provider
    assert translate_request({**body, "metadata": {"user_id": "u-1"}}, "gpt-x")["user"] == "u-1"


THINKING = {
    "model": "m",
    "max_tokens": 20000,
    "messages": [{"role": "user", "content": "Prove it."}],
}


@pytest.mark.parametrize(
    ("extra", "reasoning", "effort"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, True, "low"),
        ({"thinking": {"type": "enabled", "budget_tokens": 10000}}, True, "medium"),
        ({"thinking": {"type": "enabled", "budget_tokens": 16384}}, True, "high"),
        ({"thinking": {"type": "adaptive"}}, True, None),
        ({"thinking": {"type": "disabled"}}, True, None),
        ({"output_config": {"effort": "xhigh"}}, True, "xhigh"),
        (
            {
                "thinking": {"type": "enabled", "budget_tokens": 1024},
                "output_config": {"effort": "max"},
            },
            True,
            "max",
        ),
        # A model without reasoning_effort answers without extended thinking.
        ({"thinking": {"type": "enabled", "budget_tokens": 30000}}, False, None),
    ],
    ids=[
        "budget_low",
        "budget_medium",
        "budget_high",
        "adaptive_model_default",
        "disabled",
        "effort",
        "effort_over_budget",
        "model_without_reasoning",
    ],
)
def test_thinking_to_reasoning_effort(
    extra: dict[str, Any], reasoning: bool, effort: str | None
) -> None:
    out = translate_request({**THINKING, **extra}, "o4-mini", reasoning=reasoning)
    assert out.get("reasoning_effort") == effort


BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    (
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        "tools[0].type",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "file_1"}}],
                }
            ]
        },
        "messages[0].content[0].source.type",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "x"},
                        {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}},
                    ],
                }
            ]
        },
        "messages[0].content[1].source",
    ),
    ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"tool_choice": {"type": "sometimes"}, "tools": [WEATHER_TOOL]}, "tool_choice"),
    (
        {"messages": [{"role": "user", "content": [{"type": "search_result", "source": "x"}]}]},
        "messages[0].content[0].type",
    ),
    ({"thinking": {"type": "enabled", "budget_tokens": "lots"}}, "thinking.budget_tokens"),
]


@pytest.mark.parametrize(("extra", "param"), BAD_REQUESTS, ids=[b[1] for b in BAD_REQUESTS])
def test_request_refusals_name_the_field(extra: dict[str, Any], param: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(GatewayError) as e:
        translate_request({**body, **extra}, "gpt-x", reasoning=True)
    assert e.value.status == 400 and e.value.param == param
    assert e.value.message.startswith(param + ":")  # Anthropic errors have no param field


RESPONSES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "text_with_cached_prompt_tokens",
        {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1741569952,
            "model": "gpt-4.1-2025-04-14",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "Hello! How can I assist you today?",
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 1200,
                "completion_tokens": 10,
                "total_tokens": 1210,
                "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
            "service_tier": "default",
        },
        {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4.1-2025-04-14",
            "content": [{"type": "text", "text": "Hello! How can I assist you today?"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 176,
                "output_tokens": 10,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 1024,
            },
        },
    ),
    (
        "reasoning_content_and_two_tool_calls",
        {
            "id": "chatcmpl-2",
            "object": "chat.completion",
            "created": 1,
            "model": "deepseek-reasoner",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "reasoning_content": "Two cities: two calls.",
                        "tool_calls": [
                            {
                                "id": "call_a",
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": '{"city":"Paris"}',
                                },
                            },
                            {
                                "id": "call_b",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                            },
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {"prompt_tokens": 30, "completion_tokens": 40, "total_tokens": 70},
        },
        {
            "id": "chatcmpl-2",
            "type": "message",
            "role": "assistant",
            "model": "deepseek-reasoner",
            "content": [
                {"type": "thinking", "thinking": "Two cities: two calls.", "signature": ""},
                {
                    "type": "tool_use",
                    "id": "call_a",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_b",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 30,
                "output_tokens": 40,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        },
    ),
    (
        "refusal",
        {
            "id": "chatcmpl-3",
            "object": "chat.completion",
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "refusal": "I can't."},
                    "finish_reason": "stop",
                }
            ],
        },
        {
            "id": "chatcmpl-3",
            "type": "message",
            "role": "assistant",
            "model": "gpt-4o",
            "content": [{"type": "text", "text": "I can't."}],
            "stop_reason": "refusal",
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        },
    ),
]


@pytest.mark.parametrize(("name", "openai", "anthropic"), RESPONSES, ids=[r[0] for r in RESPONSES])
def test_response(name: str, openai: dict[str, Any], anthropic: dict[str, Any]) -> None:
    out, usage = translate_response(openai)
    assert out == anthropic
    at.Message.model_validate(out)  # the SDK's own type accepts it
    if "usage" in openai:
        assert usage is not None and usage.total_tokens == openai["usage"]["total_tokens"]


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        ("function_call", "tool_use"),
    ],
)
def test_stop_reasons(finish: str, reason: str) -> None:
    body = {"choices": [{"message": {"content": "x"}, "finish_reason": finish}]}
    out, _ = translate_response(body)
    assert out["stop_reason"] == reason


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4.1-2025-04-14",
        "system_fingerprint": "fp_1",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **extra,
    }
    return "data: " + json.dumps(body) + "\n\n"


# An OpenAI stream as the API sends it: reasoning (an OpenAI-compatible
# server's), text, two parallel tool calls by index, the finish reason, a
# keep-alive comment, the usage chunk and [DONE].
OPENAI_STREAM = (
    _chunk({"role": "assistant", "content": "", "refusal": None}, usage=None)
    + _chunk({"reasoning_content": "Two cities."}, usage=None)
    + _chunk({"content": "Let me "}, usage=None)
    + ": keep-alive\n\n"
    + _chunk({"content": "check — ☀️"}, usage=None)
    + _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        },
        usage=None,
    )
    + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}, usage=None)
    + _chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris"}'}}]}, usage=None)
    + _chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                }
            ]
        },
        usage=None,
    )
    + _chunk({}, "tool_calls", usage=None)
    + _chunk(
        None,
        usage={
            "prompt_tokens": 50,
            "completion_tokens": 30,
            "total_tokens": 80,
            "prompt_tokens_details": {"cached_tokens": 20},
        },
    )
    + "data: [DONE]\n\n"
).encode()

_EVENT = pydantic.TypeAdapter(at.RawMessageStreamEvent)


def _translate_stream(raw: bytes, split: int) -> tuple[list[tuple[str, Any]], StreamTranslator]:
    t = StreamTranslator("fallback-model")
    dec = SSEDecoder()
    out = b""
    for i in range(0, len(raw), split):  # arbitrary chunk boundaries, even mid-UTF-8
        for ev in dec.feed(raw[i : i + split]):
            if ev.is_comment:
                out += t.ping()
            elif ev.data == "[DONE]":
                out += t.stop()
            else:
                out += t.chunk(json.loads(ev.data))
    out += t.end()
    events = []
    for ev in SSEDecoder().feed(out):
        assert not isinstance(ev, bytes) and hasattr(ev, "data")
        if ev.is_comment:
            continue
        data = json.loads(ev.data)
        assert ev.event == data["type"]  # Anthropic names each event as its type
        if ev.event not in ("error", "ping"):  # both outside the SDK's event union
            _EVENT.validate_python(data)  # the SDK's own types accept it
        events.append((ev.event, data))
    return events, t


def _message(events: list[tuple[str, Any]]) -> dict[str, Any]:
    """The message a client assembles from the events (as the SDK's accumulator does)."""
    message: dict[str, Any] = {}
    partial: dict[int, str] = {}
    for name, data in events:
        if name == "message_start":
            message = data["message"]
        elif name == "content_block_start":
            assert data["index"] == len(message["content"])  # blocks numbered in order
            message["content"].append(data["content_block"])
        elif name == "content_block_delta":
            block, delta = message["content"][data["index"]], data["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "input_json_delta":
                partial[data["index"]] = partial.get(data["index"], "") + delta["partial_json"]
        elif name == "content_block_stop":
            if data["index"] in partial:
                message["content"][data["index"]]["input"] = json.loads(partial[data["index"]])
        elif name == "message_delta":
            message.update(data["delta"])
            message["usage"].update(data["usage"])
    return message


@pytest.mark.parametrize("split", [1, 7, 4096])
def test_stream(split: int) -> None:
    events, t = _translate_stream(OPENAI_STREAM, split)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names  # the provider's keep-alive comment, after message_start
    assert names.count("content_block_start") == names.count("content_block_stop") == 4
    message = _message(events)
    assert message["id"] == "chatcmpl-s1" and message["model"] == "gpt-4.1-2025-04-14"
    assert message["content"] == [
        {"type": "thinking", "thinking": "Two cities.", "signature": ""},
        {"type": "text", "text": "Let me check — ☀️"},
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Rome"}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 30,
        "output_tokens": 30,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 20,
    }
    assert t.usage is not None and t.usage.input_tokens == 50 and t.usage.cache_read_tokens == 20


def test_stream_without_done_still_completes_after_a_finish_reason() -> None:
    raw = OPENAI_STREAM[: OPENAI_STREAM.index(b"data: [DONE]")]
    events, _ = _translate_stream(raw, 4096)
    assert [n for n, _ in events][-1] == "message_stop"


def test_truncated_stream_ends_with_an_error_not_message_stop() -> None:
    # Cut before the chunk with the finish reason: the provider never said it was done.
    raw = OPENAI_STREAM[: OPENAI_STREAM.index(b'"finish_reason": "tool_calls"')]
    raw = raw[: raw.rindex(b"\n\n") + 2]
    events, _ = _translate_stream(raw, 4096)
    assert events[-1][0] == "error" and "message_stop" not in [n for n, _ in events]
    assert events[-1][1]["error"]["type"] == "api_error"


def test_error_chunk_mid_stream() -> None:
    raw = (
        _chunk({"role": "assistant", "content": "Hi"})
        + 'data: {"error": {"message": "Rate limit reached", "type": "rate_limit_error",'
        ' "param": null, "code": "rate_limit_exceeded"}}\n\n' + _chunk({"content": "never seen"})
    ).encode()
    events, _ = _translate_stream(raw, 5)
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}},
    )
    assert not any("never seen" in json.dumps(d) for _, d in events)


def test_interleaved_tool_arguments_end_the_stream_with_an_error() -> None:
    def call(index: int, args: str, start: bool = False) -> dict[str, Any]:
        c: dict[str, Any] = {"index": index, "function": {"arguments": args}}
        if start:
            c.update(id=f"call_{index}", type="function")
            c["function"]["name"] = "f"
        return {"tool_calls": [c]}

    raw = (
        _chunk(call(0, '{"a":', start=True))
        + _chunk(call(1, '{"b":1}', start=True))
        + _chunk(call(0, "1}"))
    ).encode()
    events, _ = _translate_stream(raw, 4096)
    assert events[-1][0] == "error" and "interleaved" in events[-1][1]["error"]["message"]


def test_refusal_stream() -> None:
    raw = (
        _chunk({"role": "assistant", "content": None, "refusal": ""})
        + _chunk({"refusal": "I can't help with that."})
        + _chunk({}, "stop")
        + "data: [DONE]\n\n"
    ).encode()
    events, _ = _translate_stream(raw, 3)
    message = _message(events)
    assert message["stop_reason"] == "refusal"
    assert message["content"] == [{"type": "text", "text": "I can't help with that."}]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            429,
            b'{"error": {"message": "Rate limit reached for gpt-4o", "type": "requests",'
            b' "param": null, "code": "rate_limit_exceeded"}}',
            {"type": "rate_limit_error", "message": "Rate limit reached for gpt-4o"},
        ),
        (
            401,
            b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",'
            b' "param": null, "code": "invalid_api_key"}}',
            {"type": "authentication_error", "message": "Incorrect API key provided"},
        ),
        (
            400,
            b'{"error": {"message": "Unsupported parameter: \'reasoning_effort\'",'
            b' "type": "invalid_request_error", "param": "reasoning_effort", "code": null}}',
            {
                "type": "invalid_request_error",
                "message": "Unsupported parameter: 'reasoning_effort'",
            },
        ),
        (
            502,
            b"<html>Bad Gateway</html>",
            {"type": "api_error", "message": "provider 'p' answered 502: <html>Bad Gateway</html>"},
        ),
        (503, b"", {"type": "overloaded_error", "message": "provider 'p' answered 503: no body"}),
    ],
)
def test_error(status: int, body: bytes, expected: dict[str, Any]) -> None:
    out = json.loads(translate_error(status, body, "p"))
    assert out == {"type": "error", "error": expected}


@pytest.mark.parametrize(
    ("api", "provider", "body", "key"),
    [
        (
            ClientApi.ANTHROPIC_MESSAGES,
            "oa",
            {"model": "r", "max_tokens": 32000, "messages": [{"role": "user", "content": "x"}]},
            "max_completion_tokens",
        ),
        (
            ClientApi.OPENAI_CHAT,
            "an",
            {"model": "r", "max_tokens": 32000, "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
    ],
    ids=["anthropic_client", "openai_client"],
)
def test_max_output_tokens_lowers_what_a_translated_request_asks(
    api: ClientApi, provider: str, body: dict[str, Any], key: str
) -> None:
    config = parse_config(
        {
            "providers": {
                "oa": {"api": "openai", "base_url": "https://o.test/v1", "keys": [{"env": "K"}]},
                "an": {"api": "anthropic", "base_url": "https://a.test", "keys": [{"env": "K"}]},
            },
            "models": {
                "m": {"provider": provider, "id": "m-1", "max_output_tokens": 8192},
            },
        }
    )
    for asked, sent in ((32000, 8192), (100, 100)):
        ctx = AttemptContext(
            client_api=api,
            body={**body, "max_tokens": asked},
            raw="",
            provider=config.providers[provider],
            model=config.models["m"],
            stream=False,
            include_usage=False,
            defaults=config.defaults,
        )
        assert json.loads(exchange_for(ctx).request().body)[key] == sent


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_the_exchange_keeps_what_the_response_says_about_itself(stream: bool) -> None:
    config = parse_config(
        {
            "providers": {
                "oa": {"api": "openai", "base_url": "https://o.test/v1", "keys": [{"env": "K"}]}
            },
            "models": {"m": {"provider": "oa", "id": "gpt-x"}},
        }
    )
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    ctx = AttemptContext(
        client_api=ClientApi.ANTHROPIC_MESSAGES,
        body={**body, "stream": stream},
        raw="",
        provider=config.providers["oa"],
        model=config.models["m"],
        stream=stream,
        include_usage=False,
        defaults=config.defaults,
        response_meta=True,
    )
    exchange = exchange_for(ctx)
    if stream:
        exchange.begin_response(200, "text/event-stream")
        out = b""
        for i in range(0, len(OPENAI_STREAM), 9):
            out += exchange.feed(OPENAI_STREAM[i : i + 9])
        out += exchange.finish()
        assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    else:
        exchange.begin_response(200, "application/json")
        exchange.feed(json.dumps(RESPONSES[0][1]).encode())
        assert json.loads(exchange.finish()) == RESPONSES[0][2]
    expected_id = "chatcmpl-s1" if stream else "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT"
    assert exchange.response_id == expected_id
    assert exchange.response_model == "gpt-4.1-2025-04-14"
    assert exchange.finish_reasons == (["tool_calls"] if stream else ["stop"])
    assert exchange.usage is not None and exchange.usage.input_tokens > 0

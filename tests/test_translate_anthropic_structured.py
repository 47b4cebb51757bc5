"""Table tests: OpenAI ``response_format`` on an Anthropic provider, both ways, on wire examples.

The requests are what LangChain's ``with_structured_output`` (json_schema,
json_mode) and instructor's JSON modes send; the responses and streams are
Anthropic's for a forced tool and for ``output_config.format``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from extproc.config import StructuredOutputs
from extproc.errors import GatewayError
from extproc.sse import SSEDecoder
from extproc.translate.openai_anthropic import (
    StreamTranslator,
    translate_request,
    translate_request_and_output_tool,
    translate_response,
)

# What LangChain's ChatOpenAI(...).with_structured_output(Joke, method="json_schema") sends.
JOKE_SCHEMA = {
    "type": "object",
    "properties": {
        "setup": {"type": "string", "description": "The setup of the joke"},
        "rating": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    },
    "required": ["setup", "rating"],
    "additionalProperties": False,
}
MESSAGES = [{"role": "user", "content": "Tell me a joke about cats"}]
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "Joke",
        "description": "Joke to tell user.",
        "strict": True,
        "schema": JOKE_SCHEMA,
    },
}
TOOL_DESCRIPTION = (
    "Give your final answer by calling this tool: its input is the answer, "
    "a JSON value that follows the schema."
)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ANTHROPIC_WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}

REQUESTS: list[tuple[str, dict[str, Any], StructuredOutputs, dict[str, Any]]] = [
    (
        "json_schema_as_forced_tool",
        {"model": "m", "messages": MESSAGES, "response_format": JSON_SCHEMA_FORMAT},
        StructuredOutputs.TOOL,
        {
            "tools": [
                {
                    "name": "Joke",
                    "description": TOOL_DESCRIPTION + " Joke to tell user.",
                    "input_schema": JOKE_SCHEMA,
                }
            ],
            "tool_choice": {"type": "tool", "name": "Joke"},
        },
    ),
    (
        "json_schema_native",
        {"model": "m", "messages": MESSAGES, "response_format": JSON_SCHEMA_FORMAT},
        StructuredOutputs.NATIVE,
        {"output_config": {"format": {"type": "json_schema", "schema": JOKE_SCHEMA}}},
    ),
    (
        "json_object_takes_the_tool_even_on_native",
        {"model": "m", "messages": MESSAGES, "response_format": {"type": "json_object"}},
        StructuredOutputs.NATIVE,
        {
            "tools": [
                {
                    "name": "json_output",
                    "description": TOOL_DESCRIPTION,
                    "input_schema": {"type": "object"},
                }
            ],
            "tool_choice": {"type": "tool", "name": "json_output"},
        },
    ),
    (
        "schema_name_unusable_as_tool_name",
        {
            "model": "m",
            "messages": MESSAGES,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a joke!", "schema": JOKE_SCHEMA},
            },
        },
        StructuredOutputs.TOOL,
        {
            "tools": [
                {"name": "json_output", "description": TOOL_DESCRIPTION, "input_schema": JOKE_SCHEMA}
            ],
            "tool_choice": {"type": "tool", "name": "json_output"},
        },
    ),
    (
        "beside_client_tools_auto_becomes_any",
        {
            "model": "m",
            "messages": MESSAGES,
            "tools": [WEATHER_TOOL],
            "parallel_tool_calls": False,
            "response_format": JSON_SCHEMA_FORMAT,
        },
        StructuredOutputs.TOOL,
        {
            "tools": [
                ANTHROPIC_WEATHER,
                {
                    "name": "Joke",
                    "description": TOOL_DESCRIPTION + " Joke to tell user.",
                    "input_schema": JOKE_SCHEMA,
                },
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        },
    ),
    (
        "client_forced_tool_kept",
        {
            "model": "m",
            "messages": MESSAGES,
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "response_format": {"type": "json_object"},
        },
        StructuredOutputs.TOOL,
        {
            "tools": [
                ANTHROPIC_WEATHER,
                {
                    "name": "json_output",
                    "description": TOOL_DESCRIPTION,
                    "input_schema": {"type": "object"},
                },
            ],
            "tool_choice": {"type": "tool", "name": "get_weather"},
        },
    ),
    (
        "text_format_adds_nothing",
        {"model": "m", "messages": MESSAGES, "response_format": {"type": "text"}},
        StructuredOutputs.TOOL,
        {},
    ),
]


@pytest.mark.parametrize(
    ("name", "openai", "mode", "extra"), REQUESTS, ids=[r[0] for r in REQUESTS]
)
def test_request(
    name: str, openai: dict[str, Any], mode: StructuredOutputs, extra: dict[str, Any]
) -> None:
    expected = {
        "model": "claude-haiku-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": [{"type": "text", "text": MESSAGES[0]["content"]}]}],
        **extra,
    }
    assert translate_request(openai, "claude-haiku-4-5", 1024, mode) == expected


BAD: list[tuple[str, dict[str, Any], StructuredOutputs, str]] = [
    ("not_an_object", {"response_format": "json"}, StructuredOutputs.TOOL, "response_format"),
    (
        "unknown_type",
        {"response_format": {"type": "regex"}},
        StructuredOutputs.TOOL,
        "response_format.type",
    ),
    (
        "json_schema_missing",
        {"response_format": {"type": "json_schema"}},
        StructuredOutputs.TOOL,
        "response_format.json_schema",
    ),
    (
        "array_root_through_a_tool",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "L", "schema": {"type": "array"}},
            }
        },
        StructuredOutputs.TOOL,
        "response_format.json_schema.schema",
    ),
    (
        "tool_name_taken",
        {"tools": [WEATHER_TOOL], "response_format": {
            "type": "json_schema", "json_schema": {"name": "get_weather", "schema": JOKE_SCHEMA}
        }},
        StructuredOutputs.TOOL,
        "response_format.json_schema.name",
    ),
]


@pytest.mark.parametrize(("name", "body", "mode", "param"), BAD, ids=[b[0] for b in BAD])
def test_refusals_name_the_field(
    name: str, body: dict[str, Any], mode: StructuredOutputs, param: str
) -> None:
    with pytest.raises(GatewayError) as e:
        translate_request({"messages": MESSAGES, **body}, "claude-x", 1024, mode)
    assert e.value.status == 400 and e.value.param == param


def test_array_root_is_fine_natively() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "L", "schema": {"type": "array"}}}
    body, tool = translate_request_and_output_tool(
        {"messages": MESSAGES, "response_format": fmt}, "m", 1, StructuredOutputs.NATIVE
    )
    assert tool is None and body["output_config"]["format"]["schema"] == {"type": "array"}


# Anthropic's answer to the forced tool (tool_choice {"type": "tool"}: no text before it).
FORCED_TOOL_RESPONSE = {
    "id": "msg_01Aq9w938a90dw8q",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [
        {
            "type": "tool_use",
            "id": "toolu_01A09q90qw90lq917835lq9",
            "name": "Joke",
            "input": {"setup": "Why did the cat sit on the computer?", "rating": 7},
        }
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 512, "output_tokens": 48},
}


def test_forced_tool_answer_becomes_content() -> None:
    out, usage = translate_response(FORCED_TOOL_RESPONSE, 1, output_tool="Joke")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "tool_calls" not in choice["message"]
    assert json.loads(choice["message"]["content"]) == {
        "setup": "Why did the cat sit on the computer?",
        "rating": 7,
    }
    assert usage is not None and usage.output_tokens == 48


def test_client_tool_call_beside_the_output_tool_stays_a_call() -> None:
    msg = dict(
        FORCED_TOOL_RESPONSE,
        content=[
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
        ],
    )
    out, _ = translate_response(msg, 1, output_tool="Joke")
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_without_output_tool_the_same_block_is_a_call() -> None:
    out, _ = translate_response(FORCED_TOOL_RESPONSE, 1)
    assert out["choices"][0]["finish_reason"] == "tool_calls"


NATIVE_RESPONSE = {
    "id": "msg_02",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": '{"setup":"Cats.","rating":null}'}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 20, "output_tokens": 9},
}


def test_native_answer_is_the_text() -> None:
    out, _ = translate_response(NATIVE_RESPONSE, 1)
    assert out["choices"][0]["message"]["content"] == '{"setup":"Cats.","rating":null}'
    assert out["choices"][0]["finish_reason"] == "stop"


FORCED_TOOL_STREAM = b"""event: message_start
data: {"type":"message_start","message":{"id":"msg_3","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":512,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_3","name":"Joke","input":{}}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\\"setup\\": \\"Caf\\u00e9 cat\\u2014"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"\\", \\"rating\\": 7}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":31}}

event: message_stop
data: {"type":"message_stop"}

"""


@pytest.mark.parametrize("split", [1, 5, 4096])
def test_forced_tool_stream_becomes_content_deltas(split: int) -> None:
    t = StreamTranslator(include_usage=True, created=1, output_tool="Joke")
    dec = SSEDecoder()
    out = b""
    raw = FORCED_TOOL_STREAM
    for i in range(0, len(raw), split):
        for ev in dec.feed(raw[i : i + split]):
            out += t.event(ev.event, json.loads(ev.data))
    out += t.end()
    lines = [line[6:] for line in out.decode().split("\n") if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(x) for x in lines[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert not any("tool_calls" in d for d in deltas)
    content = "".join(d.get("content", "") for d in deltas)
    assert json.loads(content) == {"setup": "Café cat—", "rating": 7}
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 31

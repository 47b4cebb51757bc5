"""Table tests: the OpenAI Responses API ⇄ chat completions and Anthropic Messages.

Requests go through the pure translators; responses and streams through the
exchanges the provider stage drives, fed at awkward byte boundaries (inside
an event, a line ending, a UTF-8 character). Every Responses object and event
that comes out is validated strictly against the openai SDK's own types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from extproc.apis import ClientApi
from extproc.config import Defaults, Model, Provider, ProviderApi, ResponsesSupport
from extproc.errors import GatewayError
from extproc.translate import exchange_for
from extproc.translate import responses_chat as rc
from extproc.translate.exchange import AttemptContext, Exchange
from extproc.translate.responses_anthropic import translate_request as to_anthropic
from extproc.translate.responses_openai import ResponsesToChat, ResponsesToOpenAI, usage_from
from extproc.translate.responses_support import check_plan

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
PNG = "data:image/png;base64,iVBORw0KGgo="

# --- requests ------------------------------------------------------------------------

REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "string_input_instructions_sampling",
        {
            "model": "fast",
            "instructions": "Be brief.",
            "input": "Hi",
            "max_output_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u-1",
        },
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "max_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u-1",
        },
    ),
    (
        "items_parallel_calls_outputs_image_reasoning_dropped",
        {
            "model": "fast",
            "input": [
                {"type": "message", "role": "developer", "content": "No emoji."},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": PNG, "detail": "low"},
                    ],
                },
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "x"},
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}],
                },
                {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
                {"type": "function_call", "call_id": "c2", "name": "b", "arguments": '{"x":1}'},
                {"type": "function_call_output", "call_id": "c1", "output": "one"},
                {
                    "type": "function_call_output",
                    "call_id": "c2",
                    "output": [{"type": "input_text", "text": "two"}],
                },
            ],
        },
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "No emoji."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": PNG, "detail": "low"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": "Let me look.",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "a", "arguments": "{}"},
                        },
                        {
                            "id": "c2",
                            "type": "function",
                            "function": {"name": "b", "arguments": '{"x":1}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "one"},
                {"role": "tool", "tool_call_id": "c2", "content": "two"},
            ],
        },
    ),
    (
        "tools_choice_schema_reasoning_stream",
        {
            "model": "fast",
            "input": [{"role": "user", "content": "Weather?"}],
            "tools": [
                {
                    "type": "function",
                    "name": "get_weather",
                    "description": "Weather",
                    "parameters": {"type": "object", "properties": {}},
                    "strict": True,
                }
            ],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "w",
                    "schema": {"type": "object"},
                    "strict": True,
                }
            },
            "reasoning": {"effort": "low", "summary": "auto"},
            "include": ["reasoning.encrypted_content"],
            "store": False,
            "stream": True,
        },
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Weather",
                        "parameters": {"type": "object", "properties": {}},
                        "strict": True,
                    },
                }
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
            },
            "reasoning_effort": "low",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    (
        "json_object_and_file",
        {
            "model": "fast",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "input_file",
                            "filename": "a.pdf",
                            "file_data": "data:application/pdf;base64,JVBERi0=",
                        }
                    ],
                }
            ],
            "text": {"format": {"type": "json_object"}},
        },
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "file",
                            "file": {
                                "file_data": "data:application/pdf;base64,JVBERi0=",
                                "filename": "a.pdf",
                            },
                        }
                    ],
                }
            ],
            "response_format": {"type": "json_object"},
        },
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [r[1:] for r in REQUESTS], ids=[r[0] for r in REQUESTS]
)
def test_request_to_chat(body: dict[str, Any], expected: dict[str, Any]) -> None:
    chat, sources = rc.translate_request(body, "m", "p")
    assert chat == expected
    assert len(sources) == len(chat["messages"])


def test_request_to_anthropic() -> None:
    body = REQUESTS[1][1]
    out = to_anthropic(body, "claude-x", "an", 4096)
    assert out["system"] == [{"type": "text", "text": "No emoji."}]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert out["messages"][1]["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "c1", "name": "a", "input": {}},
        {"type": "tool_use", "id": "c2", "name": "b", "input": {"x": 1}},
    ]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": [{"type": "text", "text": "one"}]},
        {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "two"}]},
    ]
    assert out["max_tokens"] == 4096


def test_anthropic_errors_name_the_responses_field() -> None:
    body = {
        "model": "smart",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "hi"},
            {
                "role": "user",
                "content": [{"type": "input_file", "file_data": "data:text/csv;base64,YQ=="}],
            },
        ],
    }
    with pytest.raises(GatewayError) as err:
        to_anthropic(body, "claude-x", "an", 4096)
    # Chat message 2 (after the instructions) is input item 1.
    assert err.value.param is not None and err.value.param.startswith("input[1].content[0]")
    with pytest.raises(GatewayError) as err:
        to_anthropic({"model": "s", "input": "hi", "max_output_tokens": 0}, "c", "an", 4096)
    assert err.value.param == "max_output_tokens"


REFUSED = [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": {"id": "conv_1"}}, "conversation"),
    ({"store": True}, "store"),
    ({"background": True}, "background"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools[0]"),
    ({"tools": [{"type": "computer_use_preview"}]}, "tools[0]"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0]"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice"),
    ({"top_logprobs": 3}, "top_logprobs"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
        "input[0].content[0].image_url",
    ),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
]


@pytest.mark.parametrize(("extra", "param"), REFUSED, ids=[p for _, p in REFUSED])
def test_untranslatable_is_refused_naming_the_field(extra: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as err:
        rc.translate_request({"model": "m", "input": "hi", **extra}, "m", "p")
    assert err.value.status == 400 and err.value.param == param
    assert len(err.value.message) < 400


# --- plans ------------------------------------------------------------------------------


def _provider(name: str, api: ProviderApi = ProviderApi.OPENAI, native: bool = True) -> Provider:
    return Provider(
        name=name,
        api=api,
        base_url=f"http://{name}",
        scheme="http",
        host=name,
        port=80,
        base_path="/v1",
        keys=(),
        responses=ResponsesSupport.NATIVE if native else ResponsesSupport.CHAT,
    )


def test_state_stays_with_one_provider() -> None:
    a, b = _provider("a"), _provider("b")
    stateful = {"model": "r", "input": "hi", "previous_response_id": "resp_1"}
    check_plan(stateful, "r", [a, a], 4096)  # one provider in two groups: retries stay there
    with pytest.raises(GatewayError) as err:
        check_plan(stateful, "r", [a, b], 4096)  # two providers, both native: still refused
    assert err.value.param == "previous_response_id" and "a, b" in err.value.message
    # Hosted tools need native providers, not one provider.
    check_plan({"model": "r", "input": "hi", "tools": [{"type": "web_search"}]}, "r", [a, b], 4096)
    with pytest.raises(GatewayError) as err:
        check_plan(
            {"model": "r", "input": "hi", "tools": [{"type": "web_search"}]},
            "r",
            [a, _provider("c", native=False)],
            4096,
        )
    assert err.value.param == "tools[0]" and "'r'" in err.value.message
    anthropic = _provider("d", ProviderApi.ANTHROPIC)
    check_plan({"model": "r", "input": "hi"}, "r", [a, anthropic], 4096)
    # What a translation refuses is refused before the first attempt, even when
    # the first candidate could serve it.
    with pytest.raises(GatewayError) as err:
        check_plan({"model": "r", "input": "hi", "top_logprobs": 2}, "r", [a, anthropic], 4096)
    assert err.value.param == "top_logprobs"


# --- responses ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _stable_ids(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    counter = iter(range(10**6))
    monkeypatch.setattr(rc, "new_id", lambda prefix: f"{prefix}_{next(counter)}")
    yield


def _ctx(provider: Provider, body: dict[str, Any]) -> AttemptContext:
    return AttemptContext(
        client_api=ClientApi.OPENAI_RESPONSES,
        body=body,
        raw=json.dumps(body),
        provider=provider,
        model=Model(name="m", provider=provider.name, id="m-1"),
        stream=body.get("stream") is True,
        include_usage=False,
        defaults=Defaults(),
    )


CHAT_COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m-1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking.",
                "reasoning_content": "The user wants weather.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 20,
        "completion_tokens": 9,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 3},
    },
}


def _json_through(exchange: Exchange, body: dict[str, Any]) -> dict[str, Any]:
    exchange.begin_response(200, "application/json")
    out = exchange.feed(json.dumps(body).encode()) + exchange.finish()
    result: dict[str, Any] = json.loads(out)
    return result


def test_chat_completion_becomes_a_response() -> None:
    ex = exchange_for(
        _ctx(_provider("p", native=False), {"model": "r", "input": "hi", "tools": []})
    )
    assert isinstance(ex, ResponsesToChat)
    out = _json_through(ex, CHAT_COMPLETION)
    resp = Response.model_validate(out)
    assert [o.type for o in resp.output] == ["reasoning", "message", "function_call"]
    assert resp.output_text == "Checking."
    call = resp.output[2]
    assert call.type == "function_call" and (call.call_id, call.arguments) == (
        "call_1",
        '{"city":"Paris"}',
    )
    assert resp.status == "completed" and resp.model == "m-1"
    assert out["usage"] == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 9,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 29,
    }
    assert ex.usage is not None and (ex.usage.input_tokens, ex.usage.reasoning_tokens) == (20, 3)


def test_length_is_incomplete() -> None:
    body = json.loads(json.dumps(CHAT_COMPLETION))
    body["choices"][0]["finish_reason"] = "length"
    body["choices"][0]["message"] = {"role": "assistant", "content": "Cut"}
    out = _json_through(
        exchange_for(_ctx(_provider("p", native=False), {"model": "r", "input": "hi"})), body
    )
    resp = Response.model_validate(out)
    assert resp.status == "incomplete"
    assert (
        resp.incomplete_details is not None
        and resp.incomplete_details.reason == "max_output_tokens"
    )


def test_anthropic_message_becomes_a_response() -> None:
    provider = _provider("an", ProviderApi.ANTHROPIC)
    msg = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "Sure."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Rome"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7},
    }
    out = _json_through(exchange_for(_ctx(provider, {"model": "r", "input": "hi"})), msg)
    resp = Response.model_validate(out)
    assert [o.type for o in resp.output] == ["message", "function_call"]
    assert resp.output[1].type == "function_call" and resp.output[1].call_id == "toolu_1"
    assert json.loads(resp.output[1].arguments) == {"city": "Rome"}
    assert out["usage"]["input_tokens"] == 15
    assert out["usage"]["input_tokens_details"]["cached_tokens"] == 5


def test_passthrough_reads_responses_usage() -> None:
    ex = exchange_for(_ctx(_provider("oa"), {"model": "r", "input": "hi"}))
    assert isinstance(ex, ResponsesToOpenAI)
    assert ex.request().path == "/v1/responses"
    assert json.loads(ex.request().body)["model"] == "m-1"
    body = {
        "id": "resp_1",
        "usage": {
            "input_tokens": 8,
            "input_tokens_details": {"cached_tokens": 2},
            "output_tokens": 5,
            "output_tokens_details": {"reasoning_tokens": 1},
        },
    }
    ex.begin_response(200, "application/json")
    raw = json.dumps(body).encode()
    assert ex.feed(raw) == raw and ex.finish() == b""
    assert ex.usage == usage_from(body["usage"])
    assert ex.usage is not None and (ex.usage.cache_read_tokens, ex.usage.reasoning_tokens) == (
        2,
        1,
    )


# --- streams --------------------------------------------------------------------------

CHAT_STREAM = (
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{"reasoning_content":"Hmm."},"finish_reason":null}]}\n\n'
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{"content":"Grüße, "},"finish_reason":null}]}\n\n'
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{"content":"wörld ☃"},"finish_reason":null}]}\r\n\r\n'
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}\n\n'
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"g","arguments":"{\\"b\\""}}]},"finish_reason":null}]}\n\n'
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"a\\":1}"}}]},"finish_reason":null}]}\n\n'
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":":2}"}}]},"finish_reason":null}]}\n\n'
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n'
    ": keep-alive\n\n"
    'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":6,"total_tokens":17}}\n\n'
    "data: [DONE]\n\n"
).encode()

ANTHROPIC_STREAM = (
    'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}\n\n'
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    'event: ping\ndata: {"type":"ping"}\n\n'
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Grüße ☃"}}\n\n'
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}\n\n'
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"a\\""}}\n\n'
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":":1}"}}\n\n'
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":9}}\n\n'
    'event: message_stop\ndata: {"type":"message_stop"}\n\n'
).encode()


def _stream_through(exchange: Exchange, raw: bytes, cuts: list[int]) -> bytes:
    exchange.begin_response(200, "text/event-stream")
    out = b""
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        out += exchange.feed(raw[start:end])
    return out + exchange.finish()


def _events(out: bytes) -> list[dict[str, Any]]:
    events = []
    for block in out.decode("utf-8").split("\n\n"):
        lines = block.split("\n")
        data = [line[6:] for line in lines if line.startswith("data: ")]
        if not data:
            continue
        event = json.loads(data[0])
        assert lines[0] == f"event: {event['type']}"
        EVENTS.validate_python(event)
        events.append(event)
    return events


def _split_points(raw: bytes) -> list[list[int]]:
    """One cut at every byte (mid-event, mid-CRLF, mid-UTF-8), and cuts everywhere."""
    return [[i] for i in range(1, len(raw))] + [list(range(1, len(raw)))]


def _strip_ids(out: bytes) -> bytes:
    # Ids are fresh per exchange, and the clock ticks: compare the rest.
    out = re.sub(rb'"created_at":\d+', b'"created_at":0', out)
    return re.sub(rb'"(rs|msg|fc|resp)_\d+"', b'"id"', out)


@pytest.mark.parametrize(
    ("provider", "raw"),
    [
        (_provider("ob", native=False), CHAT_STREAM),
        (_provider("an", ProviderApi.ANTHROPIC), ANTHROPIC_STREAM),
    ],
    ids=["chat", "anthropic"],
)
def test_stream_at_every_split(provider: Provider, raw: bytes) -> None:
    body = {"model": "r", "input": "hi", "stream": True}
    whole = _stream_through(exchange_for(_ctx(provider, body)), raw, [])
    events = _events(whole)
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = Response.model_validate(events[-1]["response"])
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert final.output_text == text
    calls = [o for o in final.output if o.type == "function_call"]
    # Every opened item is closed, with what its deltas said.
    added = [e["item"]["id"] for e in events if e["type"] == "response.output_item.added"]
    done = [e["item"]["id"] for e in events if e["type"] == "response.output_item.done"]
    assert sorted(added) == sorted(done) == sorted(o.id for o in final.output if o.id)
    for call in calls:
        deltas = "".join(
            e["delta"]
            for e in events
            if e["type"] == "response.function_call_arguments.delta" and e["item_id"] == call.id
        )
        assert json.loads(deltas) == json.loads(call.arguments)
    if provider.api is ProviderApi.OPENAI:
        assert [o.type for o in final.output] == [
            "reasoning",
            "message",
            "function_call",
            "function_call",
        ]
        assert text == "Grüße, wörld ☃"
        assert [json.loads(c.arguments) for c in calls] == [{"a": 1}, {"b": 2}]
        assert final.usage is not None and final.usage.input_tokens == 11
    else:
        assert b": ping\n\n" in whole
        assert [o.type for o in final.output] == ["message", "function_call"]
        assert text == "Grüße ☃" and calls[0].call_id == "toolu_1"
        assert final.usage is not None and (
            final.usage.input_tokens,
            final.usage.output_tokens,
        ) == (12, 9)
    for cuts in _split_points(raw):
        ex = exchange_for(_ctx(provider, body))
        assert _strip_ids(_stream_through(ex, raw, cuts)) == _strip_ids(whole), cuts
        assert ex.usage is not None and ex.usage.input_tokens in (11, 12)


def test_stream_cut_short_ends_in_an_error() -> None:
    ex = exchange_for(
        _ctx(_provider("ob", native=False), {"model": "r", "input": "hi", "stream": True})
    )
    out = _stream_through(ex, CHAT_STREAM[: CHAT_STREAM.index(b"data: [DONE]")], [])
    assert out.endswith(b"\n\n")
    last = json.loads(out.split(b"\n\n")[-2][6:])
    assert last["error"]["code"] == "stream_truncated"
    assert b"response.completed" not in out


def test_provider_error_event_mid_stream_is_passed_on() -> None:
    raw = ANTHROPIC_STREAM.split(b"event: content_block_stop")[0] + (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    ex = exchange_for(
        _ctx(_provider("an", ProviderApi.ANTHROPIC), {"model": "r", "input": "hi", "stream": True})
    )
    out = _stream_through(ex, raw, [])
    last = json.loads(out.split(b"\n\n")[-2][6:])
    assert last["error"]["type"] == "overloaded_error"  # the SDK raises on it


PASSTHROUGH_STREAM = (
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress","output":[],"usage":null}}\n\n'
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Grüße","logprobs":[]}\n\n'
    'event: response.completed\ndata: {"type":"response.completed","sequence_number":2,"response":{"id":"resp_1","status":"completed","output":[],"usage":{"input_tokens":30,"input_tokens_details":{"cached_tokens":10},"output_tokens":4,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":34}}}\n\n'
).encode()


def test_passthrough_stream_is_unchanged_and_read_for_usage() -> None:
    body = {"model": "r", "input": "hi", "stream": True}
    for cuts in _split_points(PASSTHROUGH_STREAM)[::5]:
        ex = exchange_for(_ctx(_provider("oa"), body))
        assert _stream_through(ex, PASSTHROUGH_STREAM, cuts) == PASSTHROUGH_STREAM
        assert ex.usage is not None
        assert (ex.usage.input_tokens, ex.usage.cache_read_tokens, ex.usage.reasoning_tokens) == (
            30,
            10,
            2,
        )


def test_output_held_for_the_final_events_is_bounded() -> None:
    ex = exchange_for(
        _ctx(_provider("ob", native=False), {"model": "r", "input": "hi", "stream": True})
    )
    ex.begin_response(200, "text/event-stream", max_bytes=16)
    out = ex.feed(CHAT_STREAM[: CHAT_STREAM.index(b"data: [DONE]")]) + ex.feed(b"data: [DONE]\n\n")
    out += ex.finish()
    blocks = [b for b in out.split(b"\n\n") if b]
    last = json.loads(blocks[-1][6:])
    assert last["error"]["code"] == "response_too_large"
    assert "limits.max_response_bytes" in last["error"]["message"]
    assert b"response.completed" not in out  # nothing after the error

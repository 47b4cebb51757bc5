"""OpenAI → OpenAI and Anthropic → Anthropic: byte-exact pass-through, usage read on the way."""

from __future__ import annotations

import json
from typing import Any

import pytest

from extproc.apis import ClientApi
from extproc.config import Defaults, Model, Provider, ProviderApi
from extproc.rawjson import set_fields, top_level_spans
from extproc.translate import AttemptContext, exchange_for


@pytest.mark.parametrize(
    ("raw", "updates", "expected"),
    [
        ('{"model":"a","x":1.50}', {"model": "b"}, '{"model":"b","x":1.50}'),
        (
            '{ "x" : [1,{"model":"inner"}] , "model" : "a" }',
            {"model": "b"},
            '{ "x" : [1,{"model":"inner"}] , "model" : "b" }',
        ),
        (
            '{"model":"a"}',
            {"stream_options": {"include_usage": True}},
            '{"stream_options":{"include_usage":true},"model":"a"}',
        ),
        ("{}", {"model": "é"}, '{"model":"é"}'),
    ],
)
def test_set_fields(raw: str, updates: dict[str, Any], expected: str) -> None:
    assert set_fields(raw, updates) == expected


def test_spans_reject_non_objects() -> None:
    with pytest.raises(ValueError):
        top_level_spans("[1]")


def _ctx(
    api: ClientApi,
    provider_api: ProviderApi,
    body: dict[str, Any],
    raw: str,
    include_usage: bool = False,
) -> AttemptContext:
    base = "http://p/v1" if provider_api is ProviderApi.OPENAI else "http://p"
    provider = Provider(
        name="p",
        api=provider_api,
        base_url=base,
        scheme="http",
        host="p",
        port=80,
        base_path="/v1" if provider_api is ProviderApi.OPENAI else "",
        keys=(),
    )
    return AttemptContext(
        client_api=api,
        body=body,
        raw=raw,
        provider=provider,
        model=Model(name="m", provider="p", id="m-2025"),
        stream=body.get("stream") is True,
        include_usage=include_usage,
        defaults=Defaults(),
    )


OPENAI_STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-2025","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-2025","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m-2025","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":1}}}\n\n'
    b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("include_usage", [True, False])
def test_openai_stream_usage(include_usage: bool) -> None:
    raw = '{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}'
    ex = exchange_for(
        _ctx(ClientApi.OPENAI_CHAT, ProviderApi.OPENAI, json.loads(raw), raw, include_usage)
    )
    out = ex.request()
    assert out.path == "/v1/chat/completions"
    assert json.loads(out.body)["stream_options"] == {"include_usage": True}
    ex.begin_response(200, "text/event-stream")
    got = b"".join(ex.feed(OPENAI_STREAM[i : i + 50]) for i in range(0, len(OPENAI_STREAM), 50))
    got += ex.finish()
    assert (b'"choices":[],"usage"' in got) is include_usage
    assert got.endswith(b"data: [DONE]\n\n")
    assert ex.usage is not None
    assert (
        ex.usage.input_tokens,
        ex.usage.output_tokens,
        ex.usage.cache_read_tokens,
        ex.usage.reasoning_tokens,
    ) == (9, 2, 4, 1)


def test_openai_json_passes_unchanged() -> None:
    raw = '{"model":"m","messages":[]}'
    ex = exchange_for(_ctx(ClientApi.OPENAI_CHAT, ProviderApi.OPENAI, json.loads(raw), raw))
    body = b'{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}'
    plan = ex.begin_response(200, "application/json")
    assert not plan.rewrites
    assert ex.feed(body[:10]) + ex.feed(body[10:]) + ex.finish() == body
    assert ex.usage is not None and ex.usage.total_tokens == 7


def test_openai_non_json_error_is_wrapped() -> None:
    raw = '{"model":"m","messages":[]}'
    ex = exchange_for(_ctx(ClientApi.OPENAI_CHAT, ProviderApi.OPENAI, json.loads(raw), raw))
    ex.begin_response(503, "text/html")
    out = ex.feed(b"<h1>down</h1>") + ex.finish()
    assert json.loads(out)["error"]["message"] == "provider 'p' answered 503: <h1>down</h1>"


def test_anthropic_passthrough_stream_usage() -> None:
    raw = '{"model":"m","max_tokens":5,"stream":true,"messages":[]}'
    ex = exchange_for(
        _ctx(ClientApi.ANTHROPIC_MESSAGES, ProviderApi.ANTHROPIC, json.loads(raw), raw)
    )
    assert ex.request().path == "/v1/messages"
    ex.begin_response(200, "text/event-stream")
    stream = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":{"input_tokens":5,"cache_read_input_tokens":2,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":12}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert ex.feed(stream) + ex.finish() == stream
    assert ex.usage is not None
    assert (ex.usage.input_tokens, ex.usage.output_tokens, ex.usage.cache_read_tokens) == (7, 12, 2)


def test_openai_stream_keeps_an_unterminated_last_event() -> None:
    raw = '{"model":"m","stream":true,"messages":[]}'
    ex = exchange_for(_ctx(ClientApi.OPENAI_CHAT, ProviderApi.OPENAI, json.loads(raw), raw, True))
    ex.begin_response(200, "text/event-stream")
    # Some OpenAI-compatible servers end without the final blank line.
    assert ex.feed(b'data: {"choices":[]}\n\ndata: [DONE]') == b'data: {"choices":[]}\n\n'
    assert ex.finish() == b"data: [DONE]"


def test_passthrough_json_that_is_not_json_is_not_appended_to() -> None:
    raw = '{"model":"m","messages":[]}'
    ex = exchange_for(_ctx(ClientApi.OPENAI_CHAT, ProviderApi.OPENAI, json.loads(raw), raw))
    ex.begin_response(200, "text/plain")
    assert ex.feed(b"plain words") == b"plain words"
    assert ex.finish() == b"" and ex.usage is None

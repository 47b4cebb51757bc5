"""The official openai SDK, configured by base URL only, through real Envoy and the ext_proc."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import KEYS
from tests.harness import GatewayProcess

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def test_plain_chat_to_openai_provider(
    client: openai.OpenAI, fakes: dict[str, FakeProvider], gateway: GatewayProcess
) -> None:
    before = len(gateway.completed)
    raw = client.chat.completions.with_raw_response.create(
        model="fast",
        messages=[{"role": "user", "content": "hello there"}],
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "Hello from oa! You said: hello there"
    assert raw.headers["x-sidegate-provider"] == "openai-a"
    assert raw.headers["x-sidegate-model"] == "gpt-4o"
    sent = fakes["oa"].requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEYS['SG_TEST_OA_KEY']}"
    assert sent.json()["model"] == "gpt-4o-2024-08-06"
    state = gateway.wait_completed(before + 1)[-1]
    assert state.usage is not None and state.usage.output_tokens == resp.usage.completion_tokens
    assert state.provider == "openai-a" and state.model == "gpt-4o"


def test_chat_translated_to_anthropic(
    client: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smart",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
        ],
        temperature=1.7,
        stop="END",
        max_completion_tokens=50,
    )
    resp = raw.parse()
    assert raw.headers["x-sidegate-provider"] == "anthropic-a"
    assert resp.choices[0].message.content == "Hello from an! You said: second question"
    assert resp.choices[0].finish_reason == "stop"
    assert (
        resp.usage is not None
        and resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    )
    sent = fakes["an"].requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEYS["SG_TEST_AN_KEY"]
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    body = sent.json()
    assert body["model"] == "claude-sonnet-4-5"
    assert body["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Answer in English."},
    ]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert (
        body["temperature"] == 1.0
        and body["stop_sequences"] == ["END"]
        and body["max_tokens"] == 50
    )


def test_streamed_chat_translated_from_anthropic(
    client: openai.OpenAI, gateway: GatewayProcess
) -> None:
    before = len(gateway.completed)
    stream = client.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from an! You said: stream please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    state = gateway.wait_completed(before + 1)[-1]
    assert state.provider == "anthropic-a" and state.usage is not None
    assert state.usage.output_tokens == chunks[-1].usage.completion_tokens


def test_stream_usage_forced_upstream_but_hidden_from_client(
    client: openai.OpenAI, fakes: dict[str, FakeProvider], gateway: GatewayProcess
) -> None:
    before = len(gateway.completed)
    chunks = list(
        client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "count me"}], stream=True
        )
    )
    assert fakes["oa"].requests[-1].json()["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks), "the usage chunk the client did not ask for leaked"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks)
        == "Hello from oa! You said: count me"
    )
    state = gateway.wait_completed(before + 1)[-1]
    assert state.usage is not None and state.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["fast", "smart"])
def test_tool_call_round_trip(client: openai.OpenAI, model: str) -> None:
    first = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=TOOLS,
        tool_choice="auto",
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
        "city": "test"
    }
    second = client.chat.completions.create(
        model=model,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
            {"role": "user", "content": "thanks"},
        ],
        tool_choice="none",
    )
    assert second.choices[0].message.content.endswith("You said: thanks")


@pytest.mark.parametrize("model", ["fast", "smart"])
def test_streamed_tool_call_arguments(client: openai.OpenAI, model: str) -> None:
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "weather?"}],
            tools=TOOLS,
            stream=True,
        )
    )
    fragments = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert fragments[0].id and fragments[0].function.name == "get_weather"
    assert len(fragments) >= 3, "arguments should arrive in several fragments"
    assert json.loads("".join(f.function.arguments or "" for f in fragments)) == {"city": "test"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_image_data_url_reaches_anthropic_as_base64(
    client: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    client.chat.completions.create(
        model="smart",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            }
        ],
    )
    block = fakes["an"].requests[-1].json()["messages"][0]["content"][1]
    assert block == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }


def test_embeddings(client: openai.OpenAI, fakes: dict[str, FakeProvider]) -> None:
    resp = client.embeddings.create(model="embed", input=["a", "b"])
    assert len(resp.data) == 2 and resp.usage.prompt_tokens == 6
    assert fakes["oa"].requests[-1].path == "/v1/embeddings"
    assert fakes["oa"].requests[-1].json()["model"] == "text-embedding-3-small"


def test_models_from_config(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"smart", "fast", "gpt-4o", "claude-sonnet", "embed"} <= ids
    assert client.models.retrieve("smart").id == "smart"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_openai_body_passes_byte_for_byte_but_the_model(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    body = (
        '{ "messages" : [{"role":"user","content":"caf\\u00e9 \u00e9"}],\n'
        '  "model": "fast", "vendor_flag": {"keep": [1, 2.50, 1e3]}, "seed": 7 }'
    )
    r = httpx.post(
        f"{gateway.base}/v1/chat/completions",
        content=body.encode(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert fakes["oa"].requests[-1].body == body.replace('"fast"', '"gpt-4o-2024-08-06"').encode()

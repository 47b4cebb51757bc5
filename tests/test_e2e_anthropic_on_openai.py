"""The official anthropic SDK against OpenAI-backed models: Messages translated both ways.

Real Envoy and ext_proc; the providers are the fakes, speaking OpenAI's wire
format. ``fast`` is gpt-4o on ``oa`` with ``ob`` as its fallback.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from extproc.devtools.fake_provider import REASONING, FakeProvider
from tests.conftest import KEYS, gateway_doc
from tests.harness import GatewayProcess

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    },
}


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=f"{gateway.base}/anthropic", api_key="app-placeholder", max_retries=0
    ) as c:
        yield c


def test_create(
    client: anthropic.Anthropic, fakes: dict[str, FakeProvider], gateway: GatewayProcess
) -> None:
    before = len(gateway.completed)
    msg = client.messages.create(
        model="fast",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "hi"}],
        metadata={"user_id": "u-1"},
        extra_headers={"x-fake-fault-oa": "cache_read=2", "anthropic-beta": "x-2025"},
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text == "Hello from oa! You said: hi"
    assert msg.stop_reason == "end_turn" and msg.model == "gpt-4o-2024-08-06"
    sent = fakes["oa"].requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEYS['SG_TEST_OA_KEY']}"
    assert "anthropic-version" not in sent.headers and "anthropic-beta" not in sent.headers
    assert "x-api-key" not in sent.headers
    assert sent.json() == {
        "model": "gpt-4o-2024-08-06",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        "max_completion_tokens": 64,
        "user": "u-1",
    }
    state = gateway.wait_completed(before + 1)[-1]
    assert state.usage is not None
    # Anthropic counts cache reads apart from input_tokens; sidegate counts them in.
    assert msg.usage.cache_read_input_tokens == 2
    assert state.usage.input_tokens == msg.usage.input_tokens + 2
    assert state.usage.output_tokens == msg.usage.output_tokens > 0


def test_stream(client: anthropic.Anthropic, gateway: GatewayProcess) -> None:
    before = len(gateway.completed)
    with client.messages.stream(
        model="fast", max_tokens=64, messages=[{"role": "user", "content": "stream"}]
    ) as s:
        kinds = []
        text = ""
        for event in s:
            kinds.append(event.type)
            if event.type == "text":
                text += event.text
        final = s.get_final_message()
    assert text == "Hello from oa! You said: stream"
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert final.stop_reason == "end_turn"
    state = gateway.wait_completed(before + 1)[-1]
    assert state.usage is not None and final.usage.output_tokens == state.usage.output_tokens > 0
    assert final.usage.input_tokens == state.usage.input_tokens > 0


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_tool_round_trip(
    client: anthropic.Anthropic, fakes: dict[str, FakeProvider], stream: bool
) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    kwargs: dict[str, Any] = {
        "model": "fast",
        "max_tokens": 64,
        "tools": [WEATHER],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    }
    if stream:
        with client.messages.stream(messages=messages, **kwargs) as s:
            first = s.get_final_message()
    else:
        first = client.messages.create(messages=messages, **kwargs)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather"
    assert call.input == {"city": "test", "days": 1}  # the schema's types
    sent = fakes["oa"].requests[-1].json()
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]

    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
        },
    ]
    second = client.messages.create(model="fast", max_tokens=64, tools=[WEATHER], messages=messages)
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == "Hello from oa! The tool said: sunny"
    sent = fakes["oa"].requests[-1].json()
    assert sent["messages"][-2]["tool_calls"][0]["id"] == call.id
    assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}


def test_provider_error_in_anthropic_format(
    client: anthropic.Anthropic, fakes: dict[str, FakeProvider]
) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model="fast",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-fault-oa": "status=400"},
        )
    assert e.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "fault injected by oa"},
    }


def test_untranslatable_request_is_refused_in_anthropic_format(
    client: anthropic.Anthropic, fakes: dict[str, FakeProvider]
) -> None:
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(
            model="fast",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert e.value.body["error"]["message"].startswith("tools[0].type: server tool")
    assert not fakes["oa"].requests and not fakes["ob"].requests


@pytest.fixture(scope="module")
def thinking_gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    doc = gateway_doc(fakes)
    doc["models"]["o4"] = {
        "provider": "openai-a",
        "id": "o4-mini",
        "reasoning": True,
        "max_output_tokens": 16384,
    }
    doc["routes"]["think"] = [["o4"]]
    gw = GatewayProcess(doc).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize(
    ("model", "effort"), [("think", "medium"), ("fast", None)], ids=["reasoning", "not_reasoning"]
)
def test_thinking_becomes_reasoning_effort_where_the_model_takes_it(
    thinking_gateway: GatewayProcess,
    fakes: dict[str, FakeProvider],
    model: str,
    effort: str | None,
) -> None:
    with anthropic.Anthropic(
        base_url=f"{thinking_gateway.base}/anthropic", api_key="x", max_retries=0
    ) as c:
        msg = c.messages.create(
            model=model,
            max_tokens=12000,
            thinking={"type": "enabled", "budget_tokens": 8000},
            messages=[{"role": "user", "content": "think"}],
        )
    assert msg.content[-1].type == "text"
    assert fakes["oa"].requests[-1].json().get("reasoning_effort") == effort


def test_max_tokens_lowered_to_the_models_output_limit(
    thinking_gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    # Claude Code asks 32,000 output tokens of any model; o4 here gives 16,384.
    with anthropic.Anthropic(
        base_url=f"{thinking_gateway.base}/anthropic", api_key="x", max_retries=0
    ) as c:
        with c.messages.stream(
            model="think", max_tokens=32000, messages=[{"role": "user", "content": "x"}]
        ) as s:
            assert s.get_final_message().stop_reason == "end_turn"
        c.messages.create(model="think", max_tokens=100, messages=[{"role": "user", "content": "x"}])
    sent = [r.json()["max_completion_tokens"] for r in fakes["oa"].requests[-2:]]
    assert sent == [16384, 100]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_reasoning_the_provider_returns_comes_back_as_a_thinking_block(
    thinking_gateway: GatewayProcess, stream: bool
) -> None:
    kwargs: dict[str, Any] = {
        "model": "think",
        "max_tokens": 8000,
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": [{"role": "user", "content": "hello"}],
        "extra_headers": {"x-fake-fault-oa": "reasoning=1"},
    }
    with anthropic.Anthropic(
        base_url=f"{thinking_gateway.base}/anthropic", api_key="x", max_retries=0
    ) as c:
        if stream:
            with c.messages.stream(**kwargs) as s:
                thought = "".join(e.thinking for e in s if e.type == "thinking")
                msg = s.get_final_message()
            assert thought == REASONING
        else:
            msg = c.messages.create(**kwargs)
    assert [b.type for b in msg.content] == ["thinking", "text"]
    assert msg.content[0].thinking == REASONING
    assert msg.content[1].text == "Hello from oa! You said: hello"


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_failover_from_anthropic_to_openai_translates_the_retry(
    client: anthropic.Anthropic, fakes: dict[str, FakeProvider], stream: bool
) -> None:
    # smart: claude-sonnet first, gpt-4o on a retry. The Anthropic provider fails.
    kwargs: dict[str, Any] = {
        "model": "smart",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "fail over"}],
        "extra_headers": {"x-fake-fault-an": "status=503"},
    }
    if stream:
        with client.messages.stream(**kwargs) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(**kwargs)
    assert msg.content[0].type == "text"
    assert msg.content[0].text == "Hello from oa! You said: fail over"
    assert [r.path for r in fakes["an"].requests] == ["/v1/messages"]
    assert fakes["oa"].requests[-1].json()["max_completion_tokens"] == 64

"""The official anthropic SDK (base URL …/anthropic) through real Envoy and the ext_proc."""

from __future__ import annotations

import anthropic
import httpx
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import KEYS
from tests.harness import GatewayProcess


@pytest.fixture
def client(gateway: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{gateway.base}/anthropic", api_key="app-placeholder", max_retries=0
    )


def test_messages_passthrough(
    client: anthropic.Anthropic, fakes: dict[str, FakeProvider], gateway: GatewayProcess
) -> None:
    before = len(gateway.completed)
    msg = client.messages.create(
        model="claude",
        max_tokens=64,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"anthropic-beta": "some-beta-2025"},
    )
    assert msg.content[0].text == "Hello from an! You said: hi"
    sent = fakes["an"].requests[-1]
    assert sent.headers["x-api-key"] == KEYS["SG_TEST_AN_KEY"]
    assert sent.headers["anthropic-beta"] == "some-beta-2025"
    assert sent.json()["model"] == "claude-sonnet-4-5"
    state = gateway.wait_completed(before + 1)[-1]
    assert state.usage is not None and state.usage.output_tokens == msg.usage.output_tokens


def test_messages_stream(client: anthropic.Anthropic, gateway: GatewayProcess) -> None:
    before = len(gateway.completed)
    with client.messages.stream(
        model="claude",
        max_tokens=64,
        messages=[{"role": "user", "content": "stream"}],
        extra_headers={"x-fake-fault-an": "cache_read=7,cache_creation=3"},
    ) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == "Hello from an! You said: stream"
    assert final.stop_reason == "end_turn"
    state = gateway.wait_completed(before + 1)[-1]
    assert state.usage is not None
    assert state.usage.cache_read_tokens == 7 and state.usage.cache_creation_tokens == 3
    assert state.usage.input_tokens == final.usage.input_tokens + 10
    assert state.usage.output_tokens == final.usage.output_tokens


def test_tool_use(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(
        model="claude",
        max_tokens=64,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[
            {
                "name": "get_weather",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
        ],
    )
    assert msg.stop_reason == "tool_use"
    assert msg.content[-1].type == "tool_use" and msg.content[-1].input == {"city": "test"}


def test_missing_max_tokens(gateway: GatewayProcess, fakes: dict[str, FakeProvider]) -> None:
    # The SDK cannot leave max_tokens out, so this one is sent raw.
    r = httpx.post(
        f"{gateway.base}/anthropic/v1/messages",
        json={"model": "claude", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "missing required field 'max_tokens'",
        },
    }
    assert not fakes["an"].requests


def test_unknown_model(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(
            model="claude-9", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"


def test_provider_error_in_anthropic_format(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(
            model="claude",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-fault-an": "status=400"},
        )

"""The OpenAI Agents SDK, configured by base URL only, through a real sidegate.

The SDK's default model API is the Responses API. An agent with a function
tool runs (``Runner.run``) and streams (``Runner.run_streamed``) against a
model served three ways: passed through to an OpenAI provider that serves
``/responses`` itself, translated to a chat-completions-only provider, and
translated to an Anthropic provider. Tracing is off: nothing leaves the box.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from agents import (
    Agent,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from agents.items import ToolCallOutputItem
from openai import AsyncOpenAI

from extproc.devtools.fake_provider import FakeProvider
from tests.harness import GatewayProcess

# model → (the fake that serves it, the path the fake is asked on)
MODELS = {
    "gpt-4o": ("oa", "/v1/responses"),
    "gpt-4o-b": ("ob", "/v1/chat/completions"),
    "claude-sonnet": ("an", "/v1/messages"),
}


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.fixture(autouse=True)
def _no_tracing() -> Iterator[None]:
    set_tracing_disabled(True)
    yield


async def _run(gateway: GatewayProcess, model: str, streamed: bool) -> tuple[Any, list[str]]:
    client = AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key="app-placeholder", max_retries=0)
    try:
        set_default_openai_client(client, use_for_tracing=False)
        agent = Agent(
            name="weather", instructions="Answer briefly.", model=model, tools=[get_weather]
        )
        if not streamed:
            result = await Runner.run(agent, "What is the weather in Paris?", max_turns=4)
            return result, []
        run = Runner.run_streamed(agent, "What is the weather in Paris?", max_turns=4)
        raw: list[str] = []
        async for event in run.stream_events():
            if event.type == "raw_response_event":
                raw.append(event.data.type)
        return run, raw
    finally:
        await client.close()


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("model", list(MODELS))
def test_agent_with_a_function_tool(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider], model: str, streamed: bool
) -> None:
    fake_name, path = MODELS[model]
    fake = fakes[fake_name]
    before = len(fake.requests)
    completed = len(gateway.completed)
    result, raw = asyncio.run(_run(gateway, model, streamed))

    outputs = [i.output for i in result.new_items if isinstance(i, ToolCallOutputItem)]
    assert outputs == ["sunny in test"], result.new_items
    assert isinstance(result.final_output, str)
    assert result.final_output.startswith(f"Hello from {fake_name}!"), result.final_output
    # Two model calls (the tool call, then the answer), both to the expected provider API.
    sent = fake.requests[before:]
    assert [r.path for r in sent] == [path, path]
    second = sent[1].json()
    if fake_name == "oa":
        assert second["input"][-1]["type"] == "function_call_output"
        assert second["input"][-1]["output"] == "sunny in test"
    elif fake_name == "ob":
        assert second["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call_fake1",
            "content": "sunny in test",
        }
        assert second["messages"][0] == {"role": "system", "content": "Answer briefly."}
    else:
        assert second["messages"][-1]["content"][0]["type"] == "tool_result"
        assert second["system"] == [{"type": "text", "text": "Answer briefly."}]
    if streamed:
        # The events the SDK builds its items from, in the Responses API's order.
        assert raw[:2] == ["response.created", "response.in_progress"]
        assert raw[-1] == "response.completed"
        for kind in (
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_text.delta",
            "response.output_text.done",
            "response.output_item.done",
        ):
            assert kind in raw, (kind, raw)
    # Usage reached the SDK, and sidegate counted the same tokens for its quotas.
    usage = result.context_wrapper.usage
    assert usage.requests == 2 and usage.input_tokens > 0 and usage.output_tokens > 0
    states = gateway.wait_completed(completed + 2)[completed:]
    assert all(s.usage is not None for s in states)
    assert sum(s.usage.input_tokens for s in states if s.usage) == usage.input_tokens
    assert sum(s.usage.output_tokens for s in states if s.usage) == usage.output_tokens

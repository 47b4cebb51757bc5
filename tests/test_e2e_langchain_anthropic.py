"""LangChain's ChatAnthropic through sidegate, on an Anthropic-backed and an OpenAI-backed model.

ChatAnthropic is configured by base URL only, as its users do. ``claude`` is
served by the Anthropic fake as is; ``fast`` by the OpenAI fake, translated
both ways. Real Envoy and ext_proc.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_anthropic import ChatAnthropic, _client_utils
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from extproc.devtools.fake_provider import FakeProvider
from tests.harness import GatewayProcess

# The route, and the fake that serves it.
MODELS = [("claude", "an"), ("fast", "oa")]
IDS = ["anthropic_backed", "openai_backed"]


@tool
def get_weather(city: str, days: int) -> str:
    """The weather in a city over the next days."""
    return "sunny"


class Movie(BaseModel):
    """A movie."""

    title: str
    year: int
    rating: float


@pytest.fixture(params=MODELS, ids=IDS)
def chat(request: pytest.FixtureRequest, gateway: GatewayProcess) -> Iterator[tuple[Any, str]]:
    model, fake = request.param
    # ChatAnthropic shares one HTTP client per base URL across instances, and
    # the SDK clients a test made are closed when it ends (conftest): each
    # test starts with a client of its own.
    _client_utils._get_default_httpx_client.cache_clear()
    llm = ChatAnthropic(  # type: ignore[call-arg]
        model=model,
        base_url=f"{gateway.base}/anthropic",
        api_key="app-placeholder",
        max_retries=0,
        max_tokens=256,
        timeout=20,
    )
    yield llm, fake


def test_invoke(chat: tuple[Any, str], fakes: dict[str, FakeProvider]) -> None:
    llm, fake = chat
    reply = llm.invoke("hi")
    assert isinstance(reply, AIMessage)
    assert reply.text == f"Hello from {fake}! You said: hi"
    assert reply.response_metadata["stop_reason"] == "end_turn"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] > 0
    assert reply.usage_metadata["input_tokens"] > 0
    assert fakes[fake].requests, "the model's own provider answered"


def test_stream(chat: tuple[Any, str]) -> None:
    llm, fake = chat
    chunks = list(llm.stream("stream please"))
    assert len(chunks) > 3  # streamed, not one piece
    full = chunks[0]
    for c in chunks[1:]:
        full += c
    assert isinstance(full, AIMessageChunk)
    assert full.text == f"Hello from {fake}! You said: stream please"
    assert full.usage_metadata is not None and full.usage_metadata["output_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_tool_round_trip(
    chat: tuple[Any, str], fakes: dict[str, FakeProvider], stream: bool
) -> None:
    llm, fake = chat
    bound = llm.bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris for 3 days?")
    if stream:
        first: Any = None
        for c in bound.stream([question]):
            first = c if first is None else first + c
    else:
        first = bound.invoke([question])
    assert first.tool_calls and first.tool_calls[0]["name"] == "get_weather"
    call = first.tool_calls[0]
    assert call["args"] == {"city": "test", "days": 1}  # typed as the schema says
    result = get_weather.invoke(call)
    assert isinstance(result, ToolMessage) and result.content == "sunny"
    final = bound.invoke([question, first, result])
    assert final.text == f"Hello from {fake}! The tool said: sunny"
    assert not final.tool_calls


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_with_structured_output(
    chat: tuple[Any, str], fakes: dict[str, FakeProvider], method: str
) -> None:
    llm, fake = chat
    structured = llm.with_structured_output(Movie, method=method)
    movie = structured.invoke("Tell me about Inception")
    assert movie == Movie(title="test", year=1, rating=1.5)
    sent = fakes[fake].requests[-1].json()
    if method == "function_calling":
        # The default: a tool forced by name.
        choice = sent["tool_choice"]
        assert choice in (
            {"type": "tool", "name": "Movie"},
            {"type": "function", "function": {"name": "Movie"}},
        )
    elif fake == "oa":
        assert sent["response_format"]["type"] == "json_schema"
    else:
        assert sent["output_config"]["format"]["type"] == "json_schema"


def test_with_structured_output_default_method_streamed(chat: tuple[Any, str]) -> None:
    llm, _ = chat
    parts = list(llm.with_structured_output(Movie).stream("Tell me about Inception"))
    assert parts and parts[-1] == Movie(title="test", year=1, rating=1.5)


def test_count_tokens(chat: tuple[Any, str], fakes: dict[str, FakeProvider]) -> None:
    llm, fake = chat
    n = llm.get_num_tokens_from_messages([HumanMessage("How many tokens is this?")])
    assert n > 0
    # Counted by the Anthropic provider, estimated by sidegate for the OpenAI one.
    counted = [r.path for r in fakes["an"].requests]
    assert counted == (["/v1/messages/count_tokens"] if fake == "an" else [])

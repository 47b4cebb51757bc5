"""LangChain's ChatOpenAI, configured by base URL only, through a real sidegate.

invoke, stream, tools (bind_tools and a tool round trip) and
``with_structured_output`` in every method (json_schema, function_calling,
json_mode), against an OpenAI-backed and Anthropic-backed models.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from extproc.devtools.fake_provider import FakeProvider
from tests.client_gateway import CHAT_MODELS, client_doc, provider_of
from tests.harness import GatewayProcess

# langchain-openai model_dump()s the openai SDK's parsed stream chunks, whose
# declared type of ``parsed`` is None: pydantic warns about the Joke in it.
# The library's, harmless; every other warning stays an error.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Pydantic serializer warnings:UserWarning:pydantic.main"
)

class Joke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="The setup of the joke")
    punchline: str = Field(description="The punchline to the joke")
    rating: int | None = Field(default=None, description="How funny the joke is, from 1 to 10")


@tool
def get_weather(city: str, days: int) -> str:
    """The weather forecast for a city, some days ahead."""
    return f"sunny in {city} for {days} days"


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(client_doc(fakes)).start()
    yield gw
    gw.stop()


def _llm(gateway: GatewayProcess, model: str, **kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(
        model=model,
        base_url=f"{gateway.base}/v1",
        api_key="app-placeholder",
        max_retries=0,
        timeout=20,
        # Its own connection pool: LangChain's default one is shared by every
        # instance, and the SDK clients of a test are closed when it ends.
        http_client=httpx.Client(timeout=20),
        **kwargs,
    )


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_invoke_and_stream(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider], model: str
) -> None:
    llm = _llm(gateway, model)
    msg = llm.invoke([SystemMessage("Be brief."), HumanMessage("hello there")])
    fake = provider_of(fakes, model)
    assert msg.content == f"Hello from {fake.name}! You said: hello there"
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] > 0
    chunks = list(_llm(gateway, model, stream_usage=True).stream("stream me"))
    assert len(chunks) > 3  # streamed, not one piece
    assert "".join(str(c.content) for c in chunks) == f"Hello from {fake.name}! You said: stream me"
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["total_tokens"] > 0


@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_tool_round_trip(gateway: GatewayProcess, model: str, stream: bool) -> None:
    llm = _llm(gateway, model, streaming=stream).bind_tools([get_weather])
    question = HumanMessage("Weather in Paris for 3 days?")
    ai = llm.invoke([question])
    assert isinstance(ai, AIMessage) and len(ai.tool_calls) == 1
    call = ai.tool_calls[0]
    # Arguments follow the tool's schema types (the string and the integer).
    assert call["name"] == "get_weather" and call["args"] == {"city": "test", "days": 1}
    result = get_weather.invoke(call)
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    final = llm.invoke([question, ai, result])
    assert not final.tool_calls  # the model answers once it has the tool's result
    assert "Hello from" in str(final.content)


@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider], model: str, method: str
) -> None:
    fake = provider_of(fakes, model)
    structured = _llm(gateway, model).with_structured_output(Joke, method=method)
    joke = structured.invoke("Tell me a joke about cats")
    # A strict schema (json_schema) requires every field, so the optional rating
    # comes back as an integer; function calling leaves it out.
    rating = 1 if method == "json_schema" else None
    assert joke == Joke(setup="test", punchline="test", rating=rating)
    sent = fake.requests[-1].json()
    if model == "gpt-4o":
        return
    if method == "json_schema" and model == "claude-native":
        assert sent["output_config"]["format"]["type"] == "json_schema"
    elif method == "json_schema":
        assert sent["tool_choice"] == {"type": "tool", "name": "Joke"}
    else:  # function_calling: LangChain's own forced tool, a tool call the client parses
        assert sent["tool_choice"]["type"] == "tool" and sent["tools"][0]["name"] == "Joke"
    # include_raw: the raw message is what an OpenAI model would have sent.
    raw = _llm(gateway, model).with_structured_output(Joke, method=method, include_raw=True)
    out = raw.invoke("Another one")
    assert out["parsing_error"] is None and out["parsed"] == joke


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_structured_output_streamed(gateway: GatewayProcess, model: str) -> None:
    structured = _llm(gateway, model).with_structured_output(Joke, method="json_schema")
    parts = list(structured.stream("Tell me a joke about dogs"))
    assert parts and parts[-1] == Joke(setup="test", punchline="test", rating=1)


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_json_mode(gateway: GatewayProcess, model: str) -> None:
    # json_mode sends no schema: the prompt says what to return, as LangChain's docs do.
    prompt = (
        "Tell me a joke about cats. Answer with a JSON object following this JSON schema: "
        + json.dumps(Joke.model_json_schema())
    )
    structured = _llm(gateway, model).with_structured_output(Joke, method="json_mode")
    assert structured.invoke(prompt) == Joke(setup="test", punchline="test", rating=None)
    as_dict = _llm(gateway, model).with_structured_output(method="json_mode")
    assert isinstance(as_dict.invoke("Any JSON object, please"), dict)

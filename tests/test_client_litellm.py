"""LiteLLM's SDK with ``api_base`` pointing at a real sidegate.

``litellm.completion`` (whole and streamed, tools, ``response_format``) and
``litellm.embedding``, on OpenAI- and Anthropic-backed models: LiteLLM talks
to sidegate as to any OpenAI-compatible server (``openai/<model>``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

# LiteLLM fetches its model price map from the internet at import unless told
# to use the copy it ships; tests download nothing.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import litellm

from extproc.devtools.fake_provider import FakeProvider
from tests.client_gateway import CHAT_MODELS, client_doc, provider_of
from tests.harness import GatewayProcess

# LiteLLM's own warnings (its types and its use of pydantic), not sidegate's;
# every other warning stays an error.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Items? .* (is|are) using the `ReadOnly` qualifier:UserWarning"),
    pytest.mark.filterwarnings(
        "ignore:Accessing the 'model_(computed_)?fields' attribute on the instance:DeprecationWarning"
    ),
]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "celsius": {"type": "boolean"}},
            "required": ["city", "celsius"],
        },
    },
}


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(client_doc(fakes)).start()
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def _fresh_clients() -> None:
    """LiteLLM keeps its openai SDK clients between calls; each test closes its own."""
    litellm.in_memory_llm_clients_cache.flush_cache()


def _args(gateway: GatewayProcess) -> dict[str, Any]:
    return {"api_base": f"{gateway.base}/v1", "api_key": "app-placeholder", "num_retries": 0}


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_completion(gateway: GatewayProcess, fakes: dict[str, FakeProvider], model: str) -> None:
    fake = provider_of(fakes, model)
    resp: Any = litellm.completion(
        model=f"openai/{model}", messages=[{"role": "user", "content": "hi"}], **_args(gateway)
    )
    assert resp.choices[0].message.content == f"Hello from {fake.name}! You said: hi"
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0
    stream: Any = litellm.completion(
        model=f"openai/{model}",
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        stream_options={"include_usage": True},
        **_args(gateway),
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) > 3 and text == f"Hello from {fake.name}! You said: stream it"
    assert any(getattr(c, "usage", None) and c.usage.total_tokens > 0 for c in chunks)


@pytest.mark.parametrize("model", CHAT_MODELS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_tools_and_json(gateway: GatewayProcess, model: str, stream: bool) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
    resp: Any = litellm.completion(
        model=f"openai/{model}", messages=messages, tools=[WEATHER], **_args(gateway)
    )
    call = resp.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "test", "celsius": True}
    messages += [
        resp.choices[0].message.model_dump(),
        {"role": "tool", "tool_call_id": call.id, "content": "12 degrees"},
    ]
    final: Any = litellm.completion(
        model=f"openai/{model}",
        messages=messages,
        tools=[WEATHER],
        stream=stream,
        **_args(gateway),
    )
    if stream:
        final = litellm.stream_chunk_builder(list(final), messages=messages)
    assert final.choices[0].finish_reason == "stop" and not final.choices[0].message.tool_calls
    fmt = {
        "type": "json_schema",
        "json_schema": {
            "name": "Forecast",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "high": {"type": "number"}},
                "required": ["city", "high"],
                "additionalProperties": False,
            },
        },
    }
    out: Any = litellm.completion(
        model=f"openai/{model}",
        messages=[{"role": "user", "content": "Forecast for Oslo"}],
        response_format=fmt,
        stream=stream,
        **_args(gateway),
    )
    if stream:
        out = litellm.stream_chunk_builder(list(out))
    assert json.loads(out.choices[0].message.content) == {"city": "test", "high": 1.5}


def test_embedding(gateway: GatewayProcess, fakes: dict[str, FakeProvider]) -> None:
    resp: Any = litellm.embedding(model="openai/embed", input=["a", "b"], **_args(gateway))
    assert [d["index"] for d in resp.data] == [0, 1]
    assert resp.data[0]["embedding"] == pytest.approx([0.1, -0.2, 0.3])
    sent = fakes["oa"].requests[-1].json()
    assert sent["model"] == "text-embedding-3-small" and sent["input"] == ["a", "b"]

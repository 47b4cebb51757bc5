"""``POST /v1/responses`` through a real sidegate, driven by the official openai SDK.

Three ways to serve it (conftest): ``gpt-4o`` is on a provider that serves the
Responses API itself (passed through, state included), ``gpt-4o-b`` on a
chat-completions-only provider and ``claude-sonnet`` on an Anthropic provider
(both translated). Shapes are checked against the SDK's own pydantic types,
validated strictly from the raw JSON, not merely parsed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess
from tests.test_request_record import Recorder

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]
SERVED = [("gpt-4o", "oa"), ("gpt-4o-b", "ob"), ("claude-sonnet", "an")]


def _post(gateway: GatewayProcess, body: dict[str, Any], **headers: str) -> httpx.Response:
    with httpx.Client(base_url=gateway.base, timeout=10) as hc:
        return hc.post("/v1/responses", json=body, headers=headers)


def _sse(text: str) -> list[dict[str, Any]]:
    """The data of each event, each checked against the SDK's event types."""
    out = []
    for block in text.split("\n\n"):
        data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            event = json.loads("\n".join(data))
            EVENTS.validate_python(event)
            assert f"event: {event['type']}" in block  # the event line names its type
            out.append(event)
    return out


# --- served three ways -------------------------------------------------------------


@pytest.mark.parametrize(("model", "fake"), SERVED)
def test_text_answer(
    client: openai.OpenAI,
    gateway: GatewayProcess,
    fakes: dict[str, FakeProvider],
    model: str,
    fake: str,
) -> None:
    completed = len(gateway.completed)
    raw = client.responses.with_raw_response.create(
        model=model, instructions="Be brief.", input="hello there", max_output_tokens=50
    )
    body = Response.model_validate(json.loads(raw.content))
    assert body.status == "completed"
    assert body.output_text.startswith(f"Hello from {fake}! You said: hello there")
    assert body.usage is not None and body.usage.input_tokens > 0
    assert raw.headers["x-sidegate-model"] == model
    state = gateway.wait_completed(completed + 1)[-1]
    assert state.usage is not None
    assert (state.usage.input_tokens, state.usage.output_tokens) == (
        body.usage.input_tokens,
        body.usage.output_tokens,
    )


@pytest.mark.parametrize(("model", "fake"), SERVED)
def test_function_call_round_trip(
    client: openai.OpenAI, fakes: dict[str, FakeProvider], model: str, fake: str
) -> None:
    first = client.responses.create(model=model, input="Weather in Paris?", tools=TOOLS)  # type: ignore[arg-type]
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    # (The chat and Anthropic fakes give every argument as a string.)
    assert set(json.loads(calls[0].arguments)) == {"city", "days"}
    # Stateless continuation: the whole conversation goes back as input items.
    second = client.responses.create(
        model=model,
        tools=TOOLS,  # type: ignore[arg-type]
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"},
        ],
    )
    assert [o.type for o in second.output] == ["message"]
    assert second.output_text.startswith(f"Hello from {fake}!")
    sent = fakes[fake].requests[-1].json()
    if fake == "ob":
        assert sent["messages"][1]["tool_calls"][0]["id"] == calls[0].call_id
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": calls[0].call_id,
            "content": "sunny",
        }
    elif fake == "an":
        assert sent["messages"][1]["content"][0]["type"] == "tool_use"
        assert sent["messages"][2]["content"][0] == {
            "type": "tool_result",
            "tool_use_id": calls[0].call_id,
            "content": [{"type": "text", "text": "sunny"}],
        }


@pytest.mark.parametrize(("model", "fake"), SERVED)
def test_stream(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider], model: str, fake: str
) -> None:
    completed = len(gateway.completed)
    resp = _post(gateway, {"model": model, "input": "stream me ünïcode", "stream": True})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    events = _sse(resp.text)
    kinds = [e["type"] for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == f"Hello from {fake}! You said: stream me ünïcode"
    final = Response.model_validate(events[-1]["response"])
    assert final.output_text == text
    assert final.usage is not None
    state = gateway.wait_completed(completed + 1)[-1]
    assert state.usage is not None and state.usage.output_tokens == final.usage.output_tokens


@pytest.mark.parametrize(("model", "fake"), SERVED)
def test_stream_with_sdk_and_tool_call(client: openai.OpenAI, model: str, fake: str) -> None:
    with client.responses.stream(model=model, input="Weather?", tools=TOOLS) as stream:  # type: ignore[arg-type]
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = next(o for o in final.output if o.type == "function_call")
    assert json.loads(call.arguments)["city"] == "test"


# --- pass-through ---------------------------------------------------------------


def test_passthrough_keeps_the_body(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    body = {
        "model": "gpt-4o",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "include": ["reasoning.encrypted_content"],
        "metadata": {"team": "a"},
        "tools": [{"type": "web_search"}],
        "store": False,
    }
    resp = _post(gateway, body)
    assert resp.status_code == 200, resp.text
    sent = fakes["oa"].requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.json() == {**body, "model": "gpt-4o-2024-08-06"}
    assert resp.headers["x-sidegate-provider"] == "openai-a"


def test_previous_response_id_continues_at_one_provider(client: openai.OpenAI) -> None:
    first = client.responses.create(model="gpt-4o", input="Weather in Paris?", tools=TOOLS)  # type: ignore[arg-type]
    call = next(o for o in first.output if o.type == "function_call")
    second = client.responses.create(
        model="gpt-4o",
        previous_response_id=first.id,
        tools=TOOLS,  # type: ignore[arg-type]
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert second.output_text == "Hello from oa! The tool said: sunny"
    assert second.previous_response_id == first.id
    # The provider's own error for an id it does not know, as it sent it.
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.create(model="gpt-4o", previous_response_id="resp_nope", input="hi")
    assert err.value.code == "previous_response_not_found"


# --- refused before any provider is asked -------------------------------------------


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        # "fast" may fail over from openai-a to openai-b: state cannot follow.
        ("fast", {"previous_response_id": "resp_1"}, "previous_response_id"),
        ("smart", {"previous_response_id": "resp_1"}, "previous_response_id"),
        ("claude-sonnet", {"tools": [{"type": "web_search"}]}, "tools[0]"),
        ("gpt-4o-b", {"store": True}, "store"),
        ("gpt-4o-b", {"background": True}, "background"),
        ("claude-sonnet", {"conversation": "conv_1"}, "conversation"),
        ("gpt-4o-b", {"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        # openai-a could serve it, but a failover to openai-b could not translate it.
        ("fast", {"top_logprobs": 2}, "top_logprobs"),
    ],
    ids=[
        "previous_response_id_across_providers",
        "previous_response_id_to_anthropic",
        "hosted_tool_to_anthropic",
        "store_to_chat",
        "background_to_chat",
        "conversation_to_anthropic",
        "item_reference_to_chat",
        "untranslatable_on_a_mixed_route",
    ],
)
def test_untranslatable_is_a_400(
    client: openai.OpenAI,
    fakes: dict[str, FakeProvider],
    model: str,
    extra: dict[str, Any],
    param: str,
) -> None:
    counts = {name: len(f.requests) for name, f in fakes.items()}
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model, **{"input": "hi", **extra})
    assert err.value.param == param
    assert param.split("[")[0] in err.value.message
    assert {name: len(f.requests) for name, f in fakes.items()} == counts


def test_bad_responses_body_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-4o", input=42)  # type: ignore[arg-type]
    assert err.value.param == "input"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="gpt-4o-b", input="hi", text={"format": {"type": "xml"}})  # type: ignore[typeddict-item]
    assert err.value.param == "text.format.type"


# --- failover and errors ------------------------------------------------------------


def test_failover_from_passthrough_to_translation(gateway: GatewayProcess) -> None:
    resp = _post(gateway, {"model": "fast", "input": "hi"}, **{"x-fake-fault-oa": "status=503"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-sidegate-provider"] == "openai-b"
    assert Response.model_validate(resp.json()).output_text.startswith("Hello from ob!")


def test_failover_from_anthropic_to_passthrough_stream(gateway: GatewayProcess) -> None:
    resp = _post(
        gateway,
        {"model": "smart", "input": "hi", "stream": True},
        **{"x-fake-fault-an": "status=529"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-sidegate-provider"] == "openai-a"
    assert _sse(resp.text)[-1]["type"] == "response.completed"


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-b", "claude-sonnet"])
def test_provider_errors_reach_the_client_in_openai_format(
    client: openai.OpenAI, model: str
) -> None:
    faulty = {"x-fake-fault-oa": "status=400", "x-fake-fault-ob": "status=400"}
    faulty["x-fake-fault-an"] = "status=400"
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model, input="hi", extra_headers=faulty)
    assert "fault injected by" in err.value.message


def test_openai_prefix_and_endpoints_not_served(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.base, timeout=10) as hc:
        prefixed = hc.post("/openai/v1/responses", json={"model": "gpt-4o-b", "input": "hi"})
        assert prefixed.status_code == 200
        assert Response.model_validate(prefixed.json()).output_text.startswith("Hello from ob!")
        # Retrieval names no model to route by.
        got = hc.get("/v1/responses/resp_1")
        assert got.status_code == 404 and got.json()["error"]["code"] == "unknown_url"
        wrong = hc.get("/v1/responses")
        assert wrong.status_code == 405


# --- the request record ------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(fakes: dict[str, FakeProvider]) -> Iterator[tuple[GatewayProcess, Recorder]]:
    gw = GatewayProcess(gateway_doc(fakes))
    recorder = Recorder()  # reads the response's id, model and finish reasons
    gw.gateway.on_complete(recorder)
    gw.start()
    yield gw, recorder
    gw.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize(
    ("model", "id_prefix", "reasons"),
    [
        ("gpt-4o", "resp_", ("completed",)),  # passed through: the Responses status
        ("gpt-4o-b", "chatcmpl-", ("stop",)),  # translated: the provider's own
        ("claude-sonnet", "msg_", ("end_turn",)),
    ],
)
def test_request_record(
    recorded: tuple[GatewayProcess, Recorder],
    model: str,
    id_prefix: str,
    reasons: tuple[str, ...],
    stream: bool,
) -> None:
    gw, rec = recorded
    before = len(rec.records)
    with openai.OpenAI(base_url=f"{gw.base}/v1", api_key="app", max_retries=0) as oa:
        if stream:
            with oa.responses.stream(model=model, input="hi") as s:
                usage = s.get_final_response().usage
        else:
            usage = oa.responses.create(model=model, input="hi").usage
    r = rec.wait(before + 1)[before]
    assert r.path == "/v1/responses" and r.final_status == 200
    assert r.response_id is not None and r.response_id.startswith(id_prefix), r.response_id
    assert r.finish_reasons == reasons
    assert usage is not None and r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens) == (
        usage.input_tokens,
        usage.output_tokens,
    )
    assert (r.first_token is not None) == stream

"""What each request shape costs in ext_proc messages, counted by the server.

Real Envoy, real gRPC, the official SDKs; the counters are the ones the
``Process`` loop bumps (``extproc.stages.message_count``). A change that adds a
message to a shape fails here; timings stay in ``sidegate bench``.

Counts per stage and message kind, for a successful first attempt. A streamed
response costs one ``response_body`` message per chunk Envoy reads from the
provider (plus one empty end-of-stream chunk), which depends on how the
provider's writes meet Envoy's reads: the fake is told to pace its events
(``chunk_delay``), and the row pins everything else exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess, wait_until

# Quotas that never deny, on every model: what is measured is their cost in messages.
QUOTAS: list[dict[str, Any]] = [
    {"name": "rpm", "per": ["user"], "window": "1m", "requests": 10**9},
    {"name": "tpm", "per": ["tenant", "model"], "window": "1m", "tokens": 10**12},
]
PACED = "chunk_delay=0.02"


@pytest.fixture(scope="module")
def quota_gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess({**gateway_doc(fakes), "quotas": QUOTAS}).start()
    yield gw
    gw.stop()


@dataclass(frozen=True)
class Shape:
    id: str
    api: str  # "openai", "openai-responses" or "anthropic": the client SDK and API
    model: str
    stream: bool
    fault: str  # the fake that serves it (paced when streamed)


SHAPES = [
    Shape("openai_passthrough", "openai", "fast", False, "oa"),
    Shape("openai_passthrough_stream", "openai", "fast", True, "oa"),
    Shape("openai_to_anthropic", "openai", "smart", False, "an"),
    Shape("openai_to_anthropic_stream", "openai", "smart", True, "an"),
    Shape("anthropic", "anthropic", "claude", False, "an"),
    Shape("anthropic_stream", "anthropic", "claude", True, "an"),
    # The Responses API: passed through (gpt-4o), and translated to Anthropic.
    Shape("responses_passthrough", "openai-responses", "gpt-4o", False, "oa"),
    Shape("responses_passthrough_stream", "openai-responses", "gpt-4o", True, "oa"),
    Shape("responses_to_anthropic_stream", "openai-responses", "claude-sonnet", True, "an"),
    Shape("anthropic_to_openai", "anthropic", "fast", False, "oa"),
    Shape("anthropic_to_openai_stream", "anthropic", "fast", True, "oa"),
]

# The body alone, the headers the steps read riding along as attributes.
POLICY = {"request_body": 1}
PROVIDER_REQUEST = {"request_headers": 1}
# The record, per stage and message kind; quotas add none. Streams: the
# provider's response_body count is one per paced event plus the end of the
# stream (see the module docstring).
EXPECTED: dict[str, dict[str, dict[str, int]]] = {
    "openai_passthrough": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 2},
    },
    "openai_passthrough_stream": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 13},
    },
    "openai_to_anthropic": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 2},
    },
    "openai_to_anthropic_stream": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 15},
    },
    "anthropic": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 2},
    },
    "anthropic_stream": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 15},
    },
    "responses_passthrough": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 2},
    },
    # created, in_progress, item added, part added, a delta per word (8), text
    # done, part done, item done, completed: 16 events, and the end of the stream.
    "responses_passthrough_stream": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 17},
    },
    "responses_to_anthropic_stream": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 15},
    },
    "anthropic_to_openai": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 2},
    },
    "anthropic_to_openai_stream": {
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 13},
    },
}
# count_tokens: counted by an Anthropic provider, it costs what a JSON call
# does; estimated, the policy stage answers from the body (no provider stage).
COUNT_TOKENS: dict[str, dict[str, Any]] = {
    "claude": {
        "streams": {"policy": 1, "provider": 1},
        "policy": POLICY,
        "provider": {**PROVIDER_REQUEST, "response_headers": 1, "response_body": 2},
    },
    "fast": {"streams": {"policy": 1}, "policy": POLICY},
}
STREAMS = {"policy": 1, "provider": 1}
# GET /v1/models and GET /v1/models/{id}: Envoy answers them (direct responses).
LIST_AND_GET_MODELS: dict[str, Any] = {}


def _delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage, per in after.items():
        diff = {k: n - before.get(stage, {}).get(k, 0) for k, n in per.items()}
        diff = {k: n for k, n in diff.items() if n}
        if diff:
            out[stage] = diff
    return out


def _call(gw: GatewayProcess, shape: Shape) -> None:
    headers = {f"x-fake-fault-{shape.fault}": PACED} if shape.stream else {}
    messages: list[Any] = [{"role": "user", "content": "count my messages"}]
    if shape.api == "openai-responses":
        with openai.OpenAI(
            base_url=f"{gw.base}/v1", api_key="app", max_retries=0, default_headers=headers
        ) as oc:
            if shape.stream:
                with oc.responses.stream(model=shape.model, input=messages) as s:
                    assert s.get_final_response().status == "completed"
            else:
                assert oc.responses.create(model=shape.model, input=messages).output_text
        return
    if shape.api == "openai":
        with openai.OpenAI(
            base_url=f"{gw.base}/v1", api_key="app", max_retries=0, default_headers=headers
        ) as oc:
            if shape.stream:
                chunks = list(
                    oc.chat.completions.create(model=shape.model, messages=messages, stream=True)
                )
                assert chunks and chunks[-1].choices[0].finish_reason == "stop"
            else:
                reply = oc.chat.completions.create(model=shape.model, messages=messages)
                assert reply.choices[0].message.content
        return
    with anthropic.Anthropic(
        base_url=f"{gw.base}/anthropic", api_key="app", max_retries=0, default_headers=headers
    ) as ac:
        if shape.stream:
            with ac.messages.stream(model=shape.model, max_tokens=32, messages=messages) as s:
                assert s.get_final_message().stop_reason == "end_turn"
        else:
            msg = ac.messages.create(model=shape.model, max_tokens=32, messages=messages)
            assert msg.stop_reason == "end_turn"


def _measure(gw: GatewayProcess, shape: Shape) -> dict[str, Any]:
    before = gw.gateway.messages.snapshot()
    done = len(gw.completed)
    _call(gw, shape)
    # Completion comes after both stages' streams closed: every message is counted.
    gw.wait_completed(done + 1)
    return _delta(before, gw.gateway.messages.snapshot())


@pytest.mark.parametrize("quotas", [False, True], ids=["no_quotas", "quotas"])
@pytest.mark.parametrize("shape", SHAPES, ids=[s.id for s in SHAPES])
def test_messages_per_request(
    shape: Shape,
    quotas: bool,
    gateway: GatewayProcess,
    quota_gateway: GatewayProcess,
    fakes: dict[str, FakeProvider],
) -> None:
    got = _measure(quota_gateway if quotas else gateway, shape)
    # The request replaced from its headers reply still goes out with its length.
    sent = fakes[shape.fault].requests[-1]
    assert sent.headers.get("content-length") == str(len(sent.body)), sent.headers
    assert "transfer-encoding" not in sent.headers
    expected: dict[str, Any] = {"streams": STREAMS, **EXPECTED[shape.id]}
    if shape.stream:
        # Paced events reach Envoy one read each, but a loaded box may still
        # join two (or the last one and the end of the body): never more
        # messages than events + 1, and more than one (the stream was not held).
        chunks = got.get("provider", {}).get("response_body", 0)
        want = expected["provider"]["response_body"]
        assert 2 <= chunks <= want, f"{chunks} response_body messages, expected {want}"
        got["provider"]["response_body"] = want
    assert got == expected


def test_list_models_messages(gateway: GatewayProcess) -> None:
    before = gateway.gateway.messages.snapshot()
    with openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="app", max_retries=0) as oc:
        assert [m.id for m in oc.models.list()] == sorted(gateway.config.routes)
        card = oc.models.retrieve("fast")
        assert (card.id, card.object, card.owned_by) == ("fast", "model", "sidegate")
    with httpx.Client(base_url=gateway.base) as hc:
        listed = hc.get("/openai/v1/models?limit=5")
        assert listed.headers["content-type"] == "application/json"
        assert listed.json()["data"][0]["object"] == "model"
    got = _delta(before, gateway.gateway.messages.snapshot())
    assert got == LIST_AND_GET_MODELS


def test_what_envoy_does_not_answer_still_reaches_the_policy_stage(gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.base) as hc:
        unknown = hc.get("/v1/models/nope")
        posted = hc.post("/v1/models", json={})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert posted.status_code == 405 and posted.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("model", ["claude", "fast"], ids=["provider", "estimate"])
def test_count_tokens_messages(gateway: GatewayProcess, model: str) -> None:
    before = gateway.gateway.messages.snapshot()
    done = len(gateway.completed)
    with anthropic.Anthropic(base_url=f"{gateway.base}/anthropic", api_key="app") as ac:
        raw = ac.messages.with_raw_response.count_tokens(
            model=model, messages=[{"role": "user", "content": "count my messages"}]
        )
    assert raw.parse().input_tokens > 0
    if raw.headers["x-sidegate-token-count"] == "provider":
        gateway.wait_completed(done + 1)
    expected = COUNT_TOKENS[model]
    # The policy stream of an answered request closes as the answer leaves.
    wait_until(
        lambda: _delta(before, gateway.gateway.messages.snapshot()) == expected,
        f"the message counts of count_tokens on {model!r}: {expected}",
    )
@pytest.mark.parametrize(
    ("path", "style"),
    [("/v1/chat/completions", "openai"), ("/anthropic/v1/messages", "anthropic")],
)
def test_bodiless_model_call_is_answered_by_envoy(
    gateway: GatewayProcess, path: str, style: str
) -> None:
    """No body, no message (Envoy sends none for it): the entry route answers, in the
    caller's format, and nothing is left in the request table."""
    before = gateway.gateway.messages.snapshot()
    with httpx.Client(base_url=gateway.base) as hc:
        r = hc.post(path, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()
    if style == "openai":
        assert err["error"]["code"] == "invalid_request"
        assert err["error"]["message"] == "request body is required"
    else:
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
        assert err["error"]["message"] == "request body is required"
    assert _delta(before, gateway.gateway.messages.snapshot()) == {}
    assert len(gateway.gateway.requests) == 0


def test_refused_paths_cost_one_headers_message(gateway: GatewayProcess) -> None:
    before = gateway.gateway.messages.snapshot()
    with httpx.Client(base_url=gateway.base) as hc:
        r = hc.post("/v1/completions", json={"model": "fast", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    assert _delta(before, gateway.gateway.messages.snapshot()) == {
        "streams": {"policy": 1},
        "policy": {"request_headers": 1},
    }

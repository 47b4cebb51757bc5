"""The policy and provider stages, driven in process with Envoy's messages (no Envoy, no gRPC)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stage_harness import Reply, Routed, Stages, Upstream

OA_KEY, AN_KEY = "sk-stage-oa-secret", "sk-ant-stage-an-secret"

DOC: dict[str, Any] = {
    "providers": {
        "oa": {"api": "openai", "base_url": "https://oa.example/v1", "keys": [{"env": "SG_STAGE_OA"}]},
        "an": {"api": "anthropic", "base_url": "https://an.example", "keys": [{"env": "SG_STAGE_AN"}]},
    },
    "models": {
        "gpt": {"provider": "oa", "id": "gpt-4o-2024-08-06"},
        "claude": {"provider": "an", "id": "claude-sonnet-4-5"},
        "haiku": {"provider": "an", "id": "claude-haiku-4-5"},
    },
    "routes": {"smart": [["claude"], ["gpt"]], "downgrade": [["claude"], ["haiku"]]},
    "quotas": [{"name": "one-gpt", "per": ["user"], "models": ["gpt"], "window": "1h", "requests": 1}],
}

CHAT = "/v1/chat/completions"


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stages]:
    monkeypatch.setenv("SG_STAGE_OA", OA_KEY)
    monkeypatch.setenv("SG_STAGE_AN", AN_KEY)
    with Stages(DOC) as s:
        yield s


def test_an_unknown_model_is_refused_by_the_policy_stage(stages: Stages) -> None:
    reply, stream = stages.policy(CHAT, chat("nope"), {"authorization": "Bearer app"})
    stages.finish(stream)
    assert isinstance(reply, Reply) and reply.status == 404
    err = reply.json()["error"]
    assert err["code"] == "model_not_found" and "'nope'" in err["message"]
    assert "smart" in err["message"]  # the names that do exist
    # Never held, but recorded once for the completion listeners, as a refusal.
    assert len(stages.gateway.requests) == 0
    [record] = stages.completed
    assert record.plan is None and record.answered is not None
    assert (record.answered.status, record.error_type) == (404, "model_not_found")


def test_anthropic_errors_come_in_the_anthropic_format(stages: Stages) -> None:
    reply, stream = stages.policy("/anthropic/v1/messages", {"model": "claude", "max_tokens": 5})
    stages.finish(stream)
    assert isinstance(reply, Reply) and reply.status == 400
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "messages" in body["error"]["message"]


def test_a_request_is_translated_keyed_and_settled(stages: Stages) -> None:
    routed, policy = stages.policy(
        CHAT, chat("smart", max_tokens=50), {"authorization": "Bearer app-placeholder"}
    )
    assert isinstance(routed, Routed), routed
    assert routed.route == "smart|openai-chat"
    assert routed.headers["x-request-id"] in stages.gateway.requests

    upstream, attempt = stages.attempt(routed, "an", attempt=1)
    assert isinstance(upstream, Upstream), upstream
    # Attempt 1 of smart is Anthropic: the body is translated, the path and key are its own.
    assert upstream.headers[":path"] == "/v1/messages"
    assert upstream.headers["x-api-key"] == AN_KEY
    assert "authorization" not in upstream.headers  # the app's placeholder never leaves
    sent = upstream.json()
    assert sent["model"] == "claude-sonnet-4-5" and sent["max_tokens"] == 50
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]

    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 7, "output_tokens": 2},
    }
    raw = json.dumps(answer).encode()
    # Split mid-document: the stage buffers what it must and answers at the end.
    client = stages.respond(attempt, 200, {"content-type": "application/json"}, [raw[:20], raw[20:]])
    assert client.ended
    assert client.headers["x-sidegate-provider"] == "an"
    out = client.json()
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["content"] == "hello"
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["prompt_tokens"] == 7 and out["usage"]["completion_tokens"] == 2

    assert stages.completed == []  # the policy stream still holds the request
    stages.finish(attempt, policy)
    [state] = stages.completed
    assert (state.provider, state.model, state.status) == ("an", "claude", 200)
    assert state.usage is not None and state.usage.output_tokens == 2
    assert len(stages.gateway.requests) == 0


def test_the_attempt_number_picks_the_model_of_its_group(stages: Stages) -> None:
    routed, policy = stages.policy(CHAT, chat("downgrade", max_tokens=5))
    assert isinstance(routed, Routed)
    first, a1 = stages.attempt(routed, "an", attempt=1)
    second, a2 = stages.attempt(routed, "an", attempt=2)
    assert isinstance(first, Upstream) and isinstance(second, Upstream)
    assert first.json()["model"] == "claude-sonnet-4-5"
    assert second.json()["model"] == "claude-haiku-4-5"
    stages.finish(a1, a2, policy)


def test_a_streamed_openai_response_passes_chunk_by_chunk(stages: Stages) -> None:
    routed, policy = stages.policy(CHAT, chat("gpt", stream=True), {"x-sidegate-user": "u1"})
    assert isinstance(routed, Routed)
    assert "x-sidegate-user" not in routed.headers  # identity headers never reach a provider
    upstream, attempt = stages.attempt(routed, "oa")
    assert isinstance(upstream, Upstream)
    assert upstream.headers["authorization"] == f"Bearer {OA_KEY}"
    assert upstream.headers[":path"] == "/v1/chat/completions"
    events = [
        {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w}}]}
        for w in ("a", "b")
    ]
    sse = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
    client = stages.respond(attempt, 200, {"content-type": "text/event-stream"}, [sse[:10], sse[10:]])
    data = client.sse_data()
    assert [json.loads(d)["choices"][0]["delta"]["content"] for d in data[:-1]] == ["a", "b"]
    assert data[-1] == "[DONE]"
    stages.finish(attempt, policy)
    assert stages.completed[-1].status == 200


def test_a_quota_refuses_at_admission_and_names_itself(stages: Stages) -> None:
    routed, policy = stages.policy(CHAT, chat("gpt"), {"x-sidegate-user": "alice"})
    assert isinstance(routed, Routed)
    stages.finish(policy)
    refused, policy = stages.policy(CHAT, chat("gpt"), {"x-sidegate-user": "alice"})
    stages.finish(policy)
    assert isinstance(refused, Reply) and refused.status == 429
    assert "'one-gpt'" in refused.json()["error"]["message"]
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    # Another caller has a window of their own.
    other, policy = stages.policy(CHAT, chat("gpt"), {"x-sidegate-user": "bob"})
    stages.finish(policy)
    assert isinstance(other, Routed)


def test_a_request_that_skipped_the_policy_stage_is_never_forwarded(stages: Stages) -> None:
    forged = Routed({":path": CHAT, "x-request-id": "forged"}, b"{}", state=None)
    reply, stream = stages.attempt(forged, "oa")
    stream.close()
    assert isinstance(reply, Reply) and reply.status == 500
    assert "without passing the policy stage" in reply.json()["error"]["message"]


def test_a_full_request_table_sheds_before_anything_is_reserved(stages: Stages) -> None:
    stages.gateway.requests.limit = 0
    reply, stream = stages.policy(CHAT, chat("gpt"), {"x-sidegate-user": "u"})
    stages.finish(stream)
    assert isinstance(reply, Reply) and reply.status == 503
    assert reply.headers["retry-after"] == "1"
    assert reply.json()["error"]["code"] == "overloaded"
    # The one-request quota was not charged: with room again, the same user is served.
    stages.gateway.requests.limit = 10
    reply, stream = stages.policy(CHAT, chat("gpt"), {"x-sidegate-user": "u"})
    assert isinstance(reply, Routed), reply
    stages.finish(stream)

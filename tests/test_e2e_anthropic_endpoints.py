"""The Anthropic API's other endpoints through sidegate, driven by the official anthropic SDK.

count_tokens (from the provider where the route is Anthropic, estimated
otherwise, never billed), the model list and cards, and the base URL's probes.
Real Envoy and ext_proc, the fakes as providers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import KEYS, gateway_doc
from tests.harness import GatewayProcess

# One request per user per hour on each model: a counted call would use it up.
QUOTAS: list[dict[str, Any]] = [
    {"name": "one-call", "per": ["user"], "window": "1h", "requests": 1, "tokens": 10**6},
]
MESSAGES: list[Any] = [{"role": "user", "content": "How many tokens is this sentence?"}]
TOOLS: list[Any] = [
    {
        "name": "get_weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


@pytest.fixture(scope="module")
def gw(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    doc = gateway_doc(fakes)
    doc["models"]["gpt-4o"]["context_window"] = 128000
    doc["models"]["gpt-4o-b"]["context_window"] = 64000
    doc["models"]["embed-only"] = {
        "provider": "openai-a",
        "id": "text-embedding-3-large",
        "embeddings": True,
    }
    doc["routes"]["embeddings"] = [["embed-only"]]
    doc["quotas"] = QUOTAS
    gateway = GatewayProcess(doc).start()
    yield gateway
    gateway.stop()


@pytest.fixture
def client(gw: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=f"{gw.base}/anthropic",
        api_key="app-placeholder",
        max_retries=0,
        default_headers={"x-sidegate-user": "counter"},
    ) as c:
        yield c


def test_count_tokens_from_the_anthropic_provider(
    client: anthropic.Anthropic, fakes: dict[str, FakeProvider], gw: GatewayProcess
) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model="claude", system="Be brief.", messages=MESSAGES, tools=TOOLS
    )
    counted = raw.parse()
    assert raw.headers["x-sidegate-token-count"] == "provider"
    sent = fakes["an"].requests[-1]
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.headers["x-api-key"] == KEYS["SG_TEST_AN_KEY"]
    assert sent.json()["model"] == "claude-sonnet-4-5" and sent.json()["tools"] == TOOLS
    # The fake's answer (one per word of the JSON, plus 7) reached the client unchanged.
    words = json.dumps([sent.json().get(k) for k in ("system", "messages", "tools")]).split()
    assert counted.input_tokens == len(words) + 7


def test_count_tokens_estimated_for_an_openai_route(
    client: anthropic.Anthropic, fakes: dict[str, FakeProvider]
) -> None:
    raw = client.messages.with_raw_response.count_tokens(model="fast", messages=MESSAGES)
    assert raw.headers["x-sidegate-token-count"] == "estimate"
    # Seven words of text, 3 a message and 3 to prime the reply (OpenAI's overhead).
    assert 10 <= raw.parse().input_tokens <= 20
    longer = client.messages.count_tokens(
        model="fast", messages=MESSAGES, system="You are a careful counter. " * 20, tools=TOOLS
    )
    assert longer.input_tokens > raw.parse().input_tokens + 100
    assert not fakes["oa"].requests and not fakes["ob"].requests


def test_count_tokens_is_not_billed(client: anthropic.Anthropic, gw: GatewayProcess) -> None:
    for model in ("claude", "fast", "claude", "fast"):
        client.messages.count_tokens(model=model, messages=MESSAGES)
    store = gw.gateway.local_counters
    assert not [k for k in store._counters if k.startswith("q:one-call:")]
    # The quota is still whole: the first real call goes through, the second not.
    client.messages.create(model="fast", max_tokens=8, messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model="fast", max_tokens=8, messages=MESSAGES)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("body", "status", "kind", "says"),
    [
        ({"model": "nope", "messages": MESSAGES}, 404, "not_found_error", "'nope'"),
        ({"model": "fast"}, 400, "invalid_request_error", "'messages'"),
        ({"messages": MESSAGES}, 400, "invalid_request_error", "'model'"),
        ({"model": "embeddings", "messages": MESSAGES}, 400, "invalid_request_error", "cannot"),
    ],
    ids=["unknown_model", "no_messages", "no_model", "embedding_route"],
)
def test_count_tokens_errors_in_anthropic_format(
    gw: GatewayProcess, body: dict[str, Any], status: int, kind: str, says: str
) -> None:
    r = httpx.post(f"{gw.base}/anthropic/v1/messages/count_tokens", json=body, timeout=10)
    assert r.status_code == status, r.text
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == kind
    assert says in r.json()["error"]["message"]


def test_count_tokens_provider_error_in_anthropic_format(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.AuthenticationError) as e:
        client.messages.count_tokens(
            model="claude", messages=MESSAGES, extra_headers={"x-fake-fault-an": "status=401"}
        )
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "authentication_error"


def test_models_list_and_cards(client: anthropic.Anthropic, gw: GatewayProcess) -> None:
    listed = list(client.models.list(limit=1000))  # as Claude Code asks
    # Every route an Anthropic client can call (each model is one too); not
    # the embedding-only ones.
    config = gw.config
    embedding = {
        name
        for name, route in config.routes.items()
        if all(config.models[c.model].embeddings for g in route.groups for c in g)
    }
    assert embedding == {"embed", "embed-only", "embeddings"}
    assert [m.id for m in listed] == sorted(set(config.routes) - embedding)
    assert all(m.type == "model" and m.display_name == m.id for m in listed)
    fast = client.models.retrieve("fast")
    assert fast.id == "fast" and fast.created_at.year == 1970
    assert fast.max_input_tokens == 64000  # the smaller window of its two candidates
    page = client.models.with_raw_response.list().parse()
    assert page.has_more is False
    assert (page.first_id, page.last_id) == (listed[0].id, listed[-1].id)
    with pytest.raises(anthropic.NotFoundError) as e:
        client.models.retrieve("embeddings")
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("path", ["/anthropic", "/anthropic/api/hello"])
def test_base_url_probes(gw: GatewayProcess, path: str) -> None:
    with httpx.Client(base_url=gw.base, timeout=10) as hc:
        head = hc.head(path)
        get = hc.get(path)
        posted = hc.post("/anthropic/v1/models", json={})
    assert head.status_code == 200 and head.content == b""
    assert get.status_code == 200 and get.json() == {}
    assert posted.status_code == 405 and posted.json()["type"] == "error"


def test_what_envoy_answers_costs_no_ext_proc_message(gw: GatewayProcess) -> None:
    before = gw.gateway.messages.snapshot()
    with httpx.Client(base_url=gw.base, timeout=10) as hc:
        assert hc.get("/anthropic/v1/models?limit=1000").status_code == 200
        assert hc.get("/anthropic/v1/models/claude").status_code == 200
        assert hc.head("/anthropic/api/hello").status_code == 200
    assert gw.gateway.messages.snapshot() == before


def test_count_tokens_resolves_model_names_as_messages_do(fakes: dict[str, FakeProvider]) -> None:
    # Claude Code counts with the model id it calls with: an alias of an
    # Anthropic route is counted by the provider, a pattern onto an
    # OpenAI-backed route is estimated.
    doc = gateway_doc(fakes)
    doc["model_names"] = {
        "aliases": {"claude-opus-4-8": "claude"},
        "patterns": {"claude-*": "fast"},
    }
    gateway = GatewayProcess(doc).start()
    try:
        with anthropic.Anthropic(base_url=f"{gateway.base}/anthropic", api_key="x") as c:
            by_alias = c.messages.with_raw_response.count_tokens(
                model="claude-opus-4-8", messages=MESSAGES
            )
            by_pattern = c.messages.with_raw_response.count_tokens(
                model="claude-haiku-9", messages=MESSAGES
            )
        assert by_alias.headers["x-sidegate-token-count"] == "provider"
        assert fakes["an"].requests[-1].json()["model"] == "claude-sonnet-4-5"
        assert by_pattern.headers["x-sidegate-token-count"] == "estimate"
        assert by_pattern.parse().input_tokens > 0
    finally:
        gateway.stop()

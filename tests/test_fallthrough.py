"""A route whose first group cannot serve a request falls through to a group that can.

``smart`` is [[claude-sonnet], [gpt-4o]]: a request only OpenAI can answer
(``n: 2``, ``logprobs``) goes to gpt-4o instead of being refused by the
Anthropic group; a request only Anthropic could not serve anywhere is refused
with the first group's reason.
"""

from __future__ import annotations

import copy
from typing import Any

import openai
import pytest

from extproc.apis import ClientApi, route_key
from extproc.config import ProviderApi, StructuredOutputs, parse_config
from extproc.devtools.fake_provider import FakeProvider
from extproc.routing import plan_routes
from tests.harness import GatewayProcess

CONFIG: dict[str, Any] = {
    "providers": {
        "o": {"api": "openai", "base_url": "https://api.openai.com/v1", "keys": [{"env": "K"}]},
        "a": {"api": "anthropic", "base_url": "https://api.anthropic.com", "keys": [{"env": "K"}]},
        "b": {"api": "anthropic", "base_url": "https://b.example", "keys": [{"env": "K"}]},
    },
    "models": {
        "gpt": {"provider": "o"},
        "haiku": {"provider": "a"},
        "sonnet": {"provider": "b", "structured_outputs": "native"},
    },
    "routes": {
        "fast": ["gpt", "haiku"],
        "mixed": [["haiku", "gpt"], ["sonnet"]],
        "claude": ["haiku"],
    },
}
OPENAI = (ProviderApi.OPENAI, StructuredOutputs.TOOL)
TOOL = (ProviderApi.ANTHROPIC, StructuredOutputs.TOOL)
NATIVE = (ProviderApi.ANTHROPIC, StructuredOutputs.NATIVE)


def test_variants_per_subset_of_capabilities() -> None:
    plans = plan_routes(parse_config(CONFIG))
    mixed = plans[route_key("mixed", ClientApi.OPENAI_CHAT)]
    assert mixed.capabilities == (TOOL, OPENAI, NATIVE)
    # Every proper, non-empty subset of three capabilities: six variants.
    assert len(mixed.narrowed) == 6
    only_openai = plans[mixed.narrowed_to(frozenset({OPENAI}))]
    assert [[c.model for c in g] for g in only_openai.groups] == [["gpt"]]
    no_tool = plans[mixed.narrowed_to(frozenset({OPENAI, NATIVE}))]
    assert [[c.model for c in g] for g in no_tool.groups] == [["gpt"], ["sonnet"]]
    assert no_tool.narrowed == () and no_tool.route == "mixed"
    # A route of one capability has no variants; Anthropic clients see one API.
    assert plans[route_key("claude", ClientApi.OPENAI_CHAT)].narrowed == ()
    # Anthropic clients reach both provider APIs, but no translation of theirs
    # refuses what another candidate serves: one plan, no variants.
    anthropic = plans[route_key("mixed", ClientApi.ANTHROPIC_MESSAGES)]
    assert len(anthropic.groups) == len(mixed.groups)
    assert anthropic.narrowed == () and anthropic.capabilities == ()


def test_variants_stay_bounded() -> None:
    doc = copy.deepcopy(CONFIG)
    for i in range(40):
        doc["models"][f"m{i}"] = {"provider": "a" if i % 2 else "o"}
        doc["routes"][f"r{i}"] = [f"m{i}", "sonnet", "gpt"]
    plans = plan_routes(parse_config(doc))
    # At most 2^3 - 2 variants a route, whatever its size.
    assert max(len(p.narrowed) for p in plans.values()) <= 6


def test_only_openai_can_serve_falls_through(
    client: openai.OpenAI, fakes: dict[str, FakeProvider], gateway: GatewayProcess
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smart", messages=[{"role": "user", "content": "two please"}], n=2
    )
    assert raw.headers["x-sidegate-provider"] == "openai-a"
    assert fakes["an"].requests == [] and fakes["oa"].requests[-1].json()["n"] == 2
    raw = client.chat.completions.with_raw_response.create(
        model="smart",
        messages=[{"role": "user", "content": "streamed"}],
        logprobs=True,
        stream=True,
    )
    chunks = list(raw.parse())
    assert raw.headers["x-sidegate-provider"] == "openai-a"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).endswith(
        "streamed"
    )


def test_what_every_group_serves_keeps_the_route_order(
    client: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smart",
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert raw.headers["x-sidegate-provider"] == "anthropic-a"
    assert raw.parse().choices[0].finish_reason == "stop"


def test_the_fallthrough_still_fails_over(
    client: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    # The narrowed route has one group left; when it fails, the client hears
    # that failure (a 503 in its own format), not a refusal, and the group
    # that cannot serve the request is never tried.
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="smart",
            messages=[{"role": "user", "content": "x"}],
            n=2,
            extra_headers={"x-fake-fault-oa": "status=503"},
        )
    assert fakes["an"].requests == []


def test_no_group_can_serve_names_the_first_groups_reason(
    client: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "x"}], n=3
        )
    body: Any = e.value.body
    assert body["param"] == "n" and body["code"] == "unsupported_for_provider"
    assert fakes["an"].requests == [] and fakes["bn"].requests == []


def test_a_malformed_request_does_not_fall_through(
    client: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    # Invalid JSON in tool arguments: the Anthropic translation refuses it as
    # the client's fault, and the OpenAI group must not be tried with it.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="smart",
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": "x"},
            ],
        )
    body: Any = e.value.body
    assert body["code"] == "invalid_request"
    assert body["param"] == "messages[0].tool_calls[0].function.arguments"
    assert fakes["oa"].requests == [] and fakes["an"].requests == []

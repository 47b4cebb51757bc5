"""Model names clients send: aliases, patterns and a default route, and the lists per API."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from extproc import model_list
from extproc.apis import ClientApi, route_key
from extproc.config import ConfigError, parse_config
from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess

BASE: dict[str, Any] = {
    "providers": {
        "openai": {"api": "openai", "base_url": "https://api.openai.com/v1", "keys": [{"env": "K"}]},
        "anthropic": {
            "api": "anthropic",
            "base_url": "https://api.anthropic.com",
            "keys": [{"env": "A"}],
        },
    },
    "models": {
        "gpt-4o": {"provider": "openai"},
        "claude": {"provider": "anthropic", "id": "claude-sonnet-4-5"},
        "embed": {"provider": "openai", "embeddings": True},
    },
    "routes": {"smart": [["claude"], ["gpt-4o"]], "fast": ["gpt-4o"]},
    "model_names": {
        "aliases": {"gpt-4": "smart", "claude-opus-4-8": "claude"},
        "patterns": {
            "claude-*": "smart",
            "claude-opus-*": "claude",
            "gpt-*": "fast",
            "*-embedding-*": "embed",
            "text-*": "fast",
        },
        "default": "fast",
    },
}


def _with(names: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["model_names"] = names
    return doc


def _resolve(name: str, api: ClientApi = ClientApi.OPENAI_CHAT, doc: Any = None) -> str | None:
    config = parse_config(doc or BASE)
    from extproc.routing import plan_routes

    plans = plan_routes(config)
    return config.model_names.resolve(name, config.routes, lambda r: route_key(r, api) in plans)


@pytest.mark.parametrize(
    ("name", "api", "route"),
    [
        pytest.param("smart", ClientApi.OPENAI_CHAT, "smart", id="route_name_first"),
        pytest.param("gpt-4o", ClientApi.OPENAI_CHAT, "gpt-4o", id="model_name_is_a_route"),
        pytest.param("gpt-4", ClientApi.OPENAI_CHAT, "smart", id="alias_beats_pattern"),
        pytest.param("claude-opus-4-8", ClientApi.OPENAI_CHAT, "claude", id="alias_exact"),
        pytest.param("claude-opus-5", ClientApi.OPENAI_CHAT, "claude", id="most_specific_pattern"),
        pytest.param("claude-haiku-4-5", ClientApi.OPENAI_CHAT, "smart", id="less_specific"),
        pytest.param("gpt-5-mini", ClientApi.OPENAI_CHAT, "fast", id="prefix_pattern"),
        pytest.param(
            "text-embedding-3-large", ClientApi.OPENAI_EMBEDDINGS, "embed", id="pattern_for_api"
        ),
        # As specific as *-embedding-*, listed later, and it serves chat: the
        # embeddings route cannot, so it is skipped.
        pytest.param("text-embedding-x", ClientApi.OPENAI_CHAT, "fast", id="skips_other_api"),
        pytest.param("llama-3", ClientApi.OPENAI_CHAT, "fast", id="default"),
        pytest.param("llama-3", ClientApi.OPENAI_EMBEDDINGS, None, id="default_cannot_serve"),
        pytest.param(
            "claude-3-opus", ClientApi.ANTHROPIC_MESSAGES, "smart", id="anthropic_client"
        ),
    ],
)
def test_resolution(name: str, api: ClientApi, route: str | None) -> None:
    assert _resolve(name, api) == route


def test_without_model_names_unknown_names_stay_unknown() -> None:
    doc = copy.deepcopy(BASE)
    del doc["model_names"]
    assert _resolve("claude-opus-4-8", doc=doc) is None


def test_tie_goes_to_the_pattern_listed_first() -> None:
    doc = _with({"patterns": {"a-*": "fast", "*-b": "smart"}})
    assert _resolve("a-b", doc=doc) == "fast"
    doc = _with({"patterns": {"*-b": "smart", "a-*": "fast"}})
    assert _resolve("a-b", doc=doc) == "smart"


BAD = [
    ({"aliases": {"x": "nope"}}, "model_names.aliases.x: no route or model named 'nope'"),
    ({"aliases": {"smart": "fast"}}, "model_names.aliases.smart: 'smart' is already a route"),
    ({"aliases": {"a*": "fast"}}, "model_names.aliases.a*: an alias is a model name"),
    ({"patterns": {"gpt-4o": "fast"}}, "model_names.patterns.gpt-4o: a pattern is a model name"),
    ({"patterns": {"gpt 4*": "fast"}}, "model_names.patterns.gpt 4*: a pattern is a model name"),
    ({"patterns": {"g*": "nope"}}, "model_names.patterns.g*: no route or model named 'nope'"),
    ({"default": "nope"}, "model_names.default: no route or model named 'nope'"),
    ({"default": 3}, "model_names.default: expected a non-empty string"),
    ({"alias": {}}, "model_names.alias: unknown field"),
    ([], "model_names: expected a mapping"),
]


@pytest.mark.parametrize(("names", "message"), BAD, ids=[b[1].split(":")[0] + str(i) for i, b in enumerate(BAD)])
def test_config_errors_name_the_field(names: Any, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_with(names))
    assert str(e.value).startswith(message), str(e.value)


def test_structured_outputs_only_on_anthropic_models() -> None:
    doc = copy.deepcopy(BASE)
    doc["models"]["gpt-4o"]["structured_outputs"] = "native"
    with pytest.raises(ConfigError, match=r"^models.gpt-4o.structured_outputs: applies to"):
        parse_config(doc)
    doc = copy.deepcopy(BASE)
    doc["models"]["claude"]["structured_outputs"] = "json"
    with pytest.raises(ConfigError, match=r"^models.claude.structured_outputs: expected one of"):
        parse_config(doc)


def test_lists_per_api() -> None:
    doc = copy.deepcopy(BASE)
    doc["routes"]["anthropic-only"] = ["claude"]  # OpenAI clients reach it too (translated)
    config = parse_config(doc)
    openai_names = model_list.served_names(config, model_list.OPENAI_APIS)
    # Chat and embedding models alike, as OpenAI's list; aliases too; no patterns.
    assert openai_names == sorted(
        ["anthropic-only", "claude", "claude-opus-4-8", "embed", "fast", "gpt-4", "gpt-4o", "smart"]
    )
    anthropic_names = model_list.served_names(config, [ClientApi.ANTHROPIC_MESSAGES])
    # Every chat route (OpenAI-backed ones translated); no embedding model.
    assert "embed" not in anthropic_names
    assert {"claude", "claude-opus-4-8", "smart", "fast", "gpt-4o"} <= set(anthropic_names)
    assert list(model_list.cards(config)) == openai_names


# --- through the real gateway ------------------------------------------------------


@pytest.fixture(scope="module")
def named_gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    doc = gateway_doc(fakes)
    doc["model_names"] = {
        "aliases": {"gpt-4": "fast"},
        "patterns": {"claude-*": "claude", "text-embedding-*": "embed"},
        "default": "fast",
    }
    gw = GatewayProcess(doc).start()
    yield gw
    gw.stop()


def test_real_model_ids_reach_their_routes(
    named_gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    with openai.OpenAI(
        base_url=f"{named_gateway.base}/v1", api_key="app", max_retries=0
    ) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="claude-opus-4-8", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-sidegate-provider"] == "anthropic-a"
        assert fakes["an"].requests[-1].json()["model"] == "claude-sonnet-4-5"
        raw = client.chat.completions.with_raw_response.create(
            model="some-model-nobody-configured", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-sidegate-provider"] == "openai-a"  # the default route, fast
        emb = client.embeddings.create(model="text-embedding-3-large", input=["a", "b"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) == 3
        assert fakes["oa"].requests[-1].json()["model"] == "text-embedding-3-small"


def test_model_list_is_what_openai_clients_can_call(named_gateway: GatewayProcess) -> None:
    with openai.OpenAI(
        base_url=f"{named_gateway.base}/v1", api_key="app", max_retries=0
    ) as client:
        ids = [m.id for m in client.models.list()]
        assert ids == model_list.served_names(named_gateway.config, model_list.OPENAI_APIS)
        assert "gpt-4" in ids and "embed" in ids and "claude-*" not in ids
        assert client.models.retrieve("gpt-4").id == "gpt-4"
    r = httpx.get(f"{named_gateway.base}/v1/models/claude-*")
    assert r.status_code == 404 and json.loads(r.content)["error"]["code"] == "model_not_found"

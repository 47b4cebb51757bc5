"""The gateway config: errors name the field by its path and say what was expected."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from extproc.config import ConfigError, ProviderApi, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent

BASE: dict[str, Any] = {
    "providers": {
        "openai": {
            "api": "openai",
            "base_url": "https://api.openai.com/v1",
            "keys": [{"env": "K"}],
        },
        "anthropic": {
            "api": "anthropic",
            "base_url": "https://api.anthropic.com",
            "keys": [{"file": "/run/keys/a"}],
            "region": "us",
        },
    },
    "models": {
        "gpt-4o": {"provider": "openai", "price": {"input_per_mtok": 2.5, "output_per_mtok": 10}},
        "claude": {"provider": "anthropic", "id": "claude-sonnet-4-5"},
    },
    "routes": {"smart": {"groups": [["claude"], "gpt-4o"], "retries": 2}},
}


def test_valid_config() -> None:
    c = parse_config(BASE)
    assert c.providers["openai"].api is ProviderApi.OPENAI
    assert (
        c.providers["openai"].host,
        c.providers["openai"].port,
        c.providers["openai"].base_path,
    ) == ("api.openai.com", 443, "/v1")
    assert c.models["gpt-4o"].id == "gpt-4o"
    assert c.routes["smart"].retries == 2
    assert [[x.model for x in g] for g in c.routes["smart"].groups] == [["claude"], ["gpt-4o"]]
    assert c.routes["claude"].groups[0][0].model == "claude"  # every model is its own route


def _with(path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()

BAD = [
    (
        "providers.openai.api",
        "gemini-pro",
        "providers.openai.api: unknown provider API 'gemini-pro'",
    ),
    (
        "providers.openai.base_url",
        "ftp://x",
        "providers.openai.base_url: expected an http:// or https://",
    ),
    ("providers.openai.keys", [], "providers.openai.keys: expected at least one key source"),
    (
        "providers.openai.keys",
        [{"env": "A", "file": "b"}],
        "providers.openai.keys[0]: expected exactly one",
    ),
    ("providers.openai.colour", "red", "providers.openai.colour: unknown field"),
    ("models.gpt-4o.provider", "azure", "models.gpt-4o.provider: no provider named 'azure'"),
    (
        "models.gpt-4o.price",
        {"input_per_mtok": -1},
        "models.gpt-4o.price.input_per_mtok: expected a number >= 0",
    ),
    (
        "providers.openai.responses",
        "yes",
        "providers.openai.responses: expected one of: native, chat; got 'yes'",
    ),
    (
        "providers.anthropic.responses",
        "native",
        "providers.anthropic.responses: only OpenAI-style providers (api: openai) take this field",
    ),
    (
        "models.claude",
        {"provider": "anthropic", "reasoning": True},
        "models.claude.reasoning: only OpenAI-style models take reasoning_effort",
    ),
    (
        "models.gpt-4o",
        {"provider": "openai", "max_output_tokens": 0},
        "models.gpt-4o.max_output_tokens: expected an integer >= 1, got 0",
    ),
    ("routes.smart.groups", [["nope"]], "routes.smart.groups[0][0]: no model named 'nope'"),
    (
        "routes.smart.groups",
        [["gpt-4o", "gpt-4o"]],
        "routes.smart.groups[0]: provider 'openai' appears twice",
    ),
    ("routes.smart.retries", 99, "routes.smart.retries: expected an integer between 0 and 10"),
    ("timeouts", {"first_byte": "soon"}, "timeouts.first_byte: expected a duration"),
    ("listen", {"port": 70000}, "listen.port: expected an integer between 1 and 65535"),
    ("providers", {}, "providers: define at least one provider"),
    (
        "quotas",
        [{"name": "q", "window": "weekly", "requests": 1}],
        "quotas[0].window: expected a duration such as 1m, 1h or 24h, or 'month', got 'weekly'",
    ),
    (
        "quotas",
        [{"name": "q", "window": "500ms", "requests": 1}],
        "quotas[0].window: expected whole seconds of at least 1s, or 'month'",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[b[2].split(":")[0] for b in BAD])
def test_errors_name_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_with(path, value))
    assert str(e.value).startswith(message), str(e.value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("providers:\n  a: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+"):
        load_config(f)


@pytest.mark.parametrize("name", ["sidegate.yaml", "local.yaml"])
def test_examples_load(name: str) -> None:
    load_config(ROOT / "examples" / name)


def test_responses_support_defaults_to_native_for_openai_only() -> None:
    from extproc.config import ResponsesSupport

    doc = copy.deepcopy(BASE)
    doc["providers"]["vllm"] = {
        "api": "openai",
        "base_url": "http://vllm.internal:8000/v1",
        "keys": [{"env": "K"}],
    }
    doc["providers"]["proxy"] = {**doc["providers"]["vllm"], "responses": "native"}
    cfg = parse_config(doc)
    assert cfg.providers["openai"].responses is ResponsesSupport.NATIVE
    assert cfg.providers["vllm"].responses is ResponsesSupport.CHAT
    assert cfg.providers["proxy"].responses is ResponsesSupport.NATIVE
    assert cfg.providers["anthropic"].responses is ResponsesSupport.CHAT  # never read

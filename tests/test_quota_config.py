"""Quota, identity and state config: defaults, and errors that name the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from extproc.config import ConfigError, KeySource, parse_config
from extproc.quota.config import MONTH, Dimension, OnUnavailable
from tests.test_config import BASE

GOOD: dict[str, Any] = {
    "quotas": [
        {"name": "rpm", "per": ["user"], "window": "1m", "requests": 60},
        {
            "name": "budget",
            "per": ["tenant", "model"],
            "models": ["smart"],
            "window": "month",
            "cost_usd": 25.5,
            "tokens": 1_000_000,
        },
    ],
    "identity": {"tenant": "acme", "user_header": "X-End-User"},
    "state": {
        "redis": {"url": {"env": "REDIS_URL"}, "timeout": "50ms"},
        "on_unavailable": "closed",
    },
    "tokenizer": {"dir": "/usr/share/sidegate/tiktoken"},
}


def test_quota_config_parses() -> None:
    q = parse_config({**copy.deepcopy(BASE), **GOOD}).quota
    rpm, budget = q.quotas
    assert (rpm.per, rpm.window, rpm.requests, rpm.tokens) == ((Dimension.USER,), 60.0, 60, None)
    assert budget.window == MONTH and budget.window_text == "month"
    assert budget.models == frozenset({"smart"}) and budget.cost_usd == 25.5
    assert budget.applies_to("smart") and not budget.applies_to("gpt-4o")
    assert q.identity.user_header == "x-end-user" and q.identity.tenant == "acme"
    assert q.state.redis is not None and q.state.redis.url == KeySource(env="REDIS_URL")
    assert q.state.redis.timeout == 0.05 and q.state.on_unavailable is OnUnavailable.CLOSED
    assert q.tokenizer_dir == "/usr/share/sidegate/tiktoken" and q.counts_tokens


def test_defaults_need_no_state() -> None:
    q = parse_config(copy.deepcopy(BASE)).quota
    assert q.quotas == () and q.state.redis is None and not q.counts_tokens
    assert q.identity.user_header == "x-sidegate-user"
    assert q.state.on_unavailable is OnUnavailable.LOCAL


def _quota(**fields: Any) -> dict[str, Any]:
    return {
        **copy.deepcopy(BASE),
        "quotas": [{"name": "q", "window": "1m", "requests": 1, **fields}],
    }


BAD = [
    (_quota(per=["team"]), "quotas[0].per[0]: unknown dimension 'team'; expected one of: model"),
    (_quota(per=["user", "user"]), "quotas[0].per[1]: dimension 'user' listed twice"),
    (_quota(models=["gpt-5"]), "quotas[0].models[0]: unknown model or route 'gpt-5'"),
    (_quota(window="fortnight"), "quotas[0].window: expected a duration"),
    (_quota(window="500ms"), "quotas[0].window: expected whole seconds of at least 1s"),
    (_quota(window=None), "quotas[0].window: required"),
    (_quota(requests=0), "quotas[0].requests: expected an integer >= 1"),
    (_quota(requests=None), "quotas[0]: a quota bounds at least one of: requests, tokens"),
    (_quota(name="Big Spender"), "quotas[0].name: quota names are lowercase"),
    (_quota(colour="red"), "quotas[0].colour: unknown field"),
    (
        {**copy.deepcopy(BASE), "quotas": [{"name": "a", "window": "1m", "requests": 1}] * 2},
        "quotas[1].name: duplicate quota name 'a'",
    ),
    (
        {**copy.deepcopy(BASE), "state": {"redis": {"url": "http://redis:6379"}}},
        "state.redis.url: expected a redis://, rediss:// or unix:// URL",
    ),
    ({**copy.deepcopy(BASE), "state": {"redis": {}}}, "state.redis.url: required"),
    (
        {**copy.deepcopy(BASE), "state": {"redis": {"url": "redis://r", "timeout": "3s"}}},
        "state.redis.timeout: at most 2s, got '3s'",
    ),
    (
        {**copy.deepcopy(BASE), "state": {"redis": {"url": "unix:///r.sock", "cluster": True}}},
        "state.redis.cluster: a Redis Cluster is reached over redis:// or rediss://",
    ),
    (
        {**copy.deepcopy(BASE), "state": {"redis": {"url": "redis://r", "cluster": "yes"}}},
        "state.redis.cluster: expected",
    ),
    (
        {**copy.deepcopy(BASE), "defaults": {"reserve_output_tokens": -1}},
        "defaults.reserve_output_tokens: expected an integer >= 0",
    ),
    (
        {**copy.deepcopy(BASE), "state": {"on_unavailable": "maybe"}},
        "state.on_unavailable: expected one of: local, closed, open",
    ),
    (
        {**copy.deepcopy(BASE), "identity": {"user_header": "x user"}},
        "identity.user_header: not an HTTP header name",
    ),
]


@pytest.mark.parametrize(("doc", "message"), BAD, ids=[b[1].split(":")[0] for b in BAD])
def test_errors_name_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    assert str(e.value).startswith(message), str(e.value)


def test_a_redis_url_with_a_password_never_prints() -> None:
    doc = {
        **copy.deepcopy(BASE),
        "state": {"redis": {"url": "redis://:hunter2@10.0.0.1:6380/2", "cluster": True}},
    }
    config = parse_config(doc)
    redis = config.quota.state.redis
    assert redis is not None and redis.cluster
    for text in (repr(config), str(config.quota), repr(redis), redis.describe()):
        assert "hunter2" not in text
    assert "redis://10.0.0.1:6380/2" in repr(redis)


def test_output_reserved_by_default() -> None:
    assert parse_config(copy.deepcopy(BASE)).defaults.reserve_output_tokens == 4096
    doc = {**copy.deepcopy(BASE), "defaults": {"reserve_output_tokens": 512}}
    assert parse_config(doc).defaults.reserve_output_tokens == 512

"""Quotas end to end: real Envoy, real gRPC, real Redis, the official SDKs as clients."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from extproc.cli import main
from extproc.config import ConfigError, parse_config
from extproc.devtools.fake_provider import FakeProvider
from extproc.gateway import Gateway
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess, free_port, wait_until
from tests.redisd import RedisServer

QUOTAS: list[dict[str, Any]] = [
    {"name": "user-requests", "per": ["user"], "models": ["fast"], "window": "1h", "requests": 2},
    {
        "name": "tenant-tokens",
        "per": ["tenant"],
        "models": ["gpt-4o"],
        "window": "1h",
        "tokens": 40,
    },
    {
        "name": "claude-budget",
        "per": ["tenant"],
        "models": ["claude"],
        "window": "month",
        "cost_usd": 0.0002,
    },
]


def quota_doc(fakes: dict[str, FakeProvider], **extra: Any) -> dict[str, Any]:
    doc = gateway_doc(fakes)
    doc["models"]["claude-sonnet"]["price"] = {"input_per_mtok": 3, "output_per_mtok": 15}
    doc["models"]["claude-sonnet-b"]["price"] = {"input_per_mtok": 3, "output_per_mtok": 15}
    doc["quotas"] = QUOTAS
    doc.update(extra)
    return doc


def oa(gw: GatewayProcess, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gw.base}/v1", api_key="app-placeholder", max_retries=0, default_headers=headers
    )


def hi(client: openai.OpenAI, model: str = "fast", **kw: Any) -> Any:
    # A small max_tokens: admission reserves it (these quotas are tiny).
    kw.setdefault("max_tokens", 8)
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello there"}], **kw
    )


def cost(usage: Any) -> int:
    return math.ceil(usage.prompt_tokens * 2.5) + math.ceil(usage.completion_tokens * 10)


def counters(gw: GatewayProcess, quota: str) -> list[list[int]]:
    store = gw.gateway.local_counters
    return [v for k, v in store._counters.items() if k.startswith(f"q:{quota}:")]


def redis_counters(server: RedisServer, quota: str, prefix: str = "sidegate:") -> list[list[int]]:
    r = server.client()
    found = []
    for key in r.scan_iter(f"{prefix}q:{quota}:*"):
        h = r.hgetall(key)
        found.append([int(h[b"r"]), int(h[b"t"]), int(h[b"c"])])
    return found


@pytest.fixture(scope="module")
def local_gw(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(quota_doc(fakes, identity={"tenant": "acme"})).start()
    yield gw
    gw.stop()


def test_requests_quota_per_user(local_gw: GatewayProcess, fakes: dict[str, FakeProvider]) -> None:
    alice = oa(local_gw, **{"x-sidegate-user": "alice"})
    hi(alice)
    hi(alice)
    with pytest.raises(openai.RateLimitError) as caught:
        hi(alice)
    err = caught.value
    assert err.status_code == 429
    body = err.response.json()["error"]
    assert body["code"] == "rate_limit_exceeded" and body["type"] == "rate_limit_error"
    assert "'user-requests' for user alice allows 2 requests per 1h" in body["message"]
    assert 0 < int(err.response.headers["retry-after"]) <= 3600
    # Another user has a window of their own, named by the OpenAI `user` field too.
    hi(oa(local_gw, **{"x-sidegate-user": "bob"}))
    hi(oa(local_gw), user="carol")
    hi(oa(local_gw), user="carol")
    with pytest.raises(openai.RateLimitError, match="user carol"):
        hi(oa(local_gw), user="carol")
    # Identity headers are sidegate's: the provider never saw them.
    sent = fakes["oa"].requests[-1].headers
    assert "x-sidegate-user" not in sent and "x-sidegate-tenant" not in sent


def test_tokens_are_estimated_then_reconciled(local_gw: GatewayProcess) -> None:
    client = oa(local_gw, **{"x-sidegate-tenant": "t-tokens"})
    first = hi(client, model="gpt-4o")
    # The estimate is replaced by what the provider reported, priced at
    # gpt-4o's $2.50 / $10 per million tokens (counted in micro-dollars).
    settled = [[1, first.usage.total_tokens, cost(first.usage)]]
    wait_until(lambda: counters(local_gw, "tenant-tokens") == settled, "the first settlement")
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hello there"}],
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [c.usage for c in stream if c.usage][-1]
    total = first.usage.total_tokens + usage.total_tokens
    settled = [[2, total, cost(first.usage) + cost(usage)]]
    wait_until(lambda: counters(local_gw, "tenant-tokens") == settled, "the stream's settlement")
    with pytest.raises(openai.RateLimitError) as caught:
        while True:
            hi(client, model="gpt-4o")
    message = caught.value.response.json()["error"]["message"]
    assert "'tenant-tokens' for tenant t-tokens allows 40 tokens per 1h" in message
    # The default tenant is the config's.
    hi(oa(local_gw), model="gpt-4o")
    assert any(k.endswith("tenant=acme") for k in local_gw.gateway.local_counters._counters)


def test_budget_in_anthropic_format(local_gw: GatewayProcess) -> None:
    client = anthropic.Anthropic(
        base_url=f"{local_gw.base}/anthropic",
        api_key="placeholder",
        max_retries=0,
        default_headers={"x-sidegate-tenant": "budget"},
    )

    def ask() -> Any:
        return client.messages.create(
            model="claude", max_tokens=4, messages=[{"role": "user", "content": "hello"}]
        )

    with pytest.raises(anthropic.RateLimitError) as caught:
        for _ in range(50):
            ask()
    body = caught.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "allows $0.00 per month" in body["error"]["message"]
    assert "retry-after" in caught.value.response.headers
    # Micro-dollars: spent up to where the next prompt no longer fits the budget.
    used = counters(local_gw, "claude-budget")[0]
    assert 100 < used[2] <= 200 and used[0] > 1
    assert "this request needs about $" in body["error"]["message"]


def test_a_request_bigger_than_the_window_says_so(local_gw: GatewayProcess) -> None:
    client = oa(local_gw, **{"x-sidegate-tenant": "big"})
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "word " * 500}]
        )
    assert "this request alone needs about" in str(caught.value)
    assert "retry-after" not in caught.value.response.headers
    # A prompt past 64 KiB is counted off the event loop, with Envoy told to wait.
    # It needs its 20,000 words and the 4,096 output tokens reserved by default.
    with pytest.raises(openai.RateLimitError, match=r"needs about 2410[0-9] tokens"):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "word " * 20_000}]
        )
    assert counters(local_gw, "tenant-tokens") and not any(
        k.endswith("tenant=big") for k in local_gw.gateway.local_counters._counters
    )


def test_identity_too_long_is_a_400(local_gw: GatewayProcess) -> None:
    with pytest.raises(openai.BadRequestError, match="header x-sidegate-user is 300 characters"):
        hi(oa(local_gw, **{"x-sidegate-user": "u" * 300}))


def test_sidecars_share_one_redis_budget_exactly(
    fakes: dict[str, FakeProvider], redis_server: RedisServer
) -> None:
    redis_server.client().flushall()
    doc = quota_doc(fakes, state={"redis": {"url": redis_server.url}})
    doc["quotas"] = [
        {"name": "shared", "per": ["tenant"], "window": "1h", "requests": 5, "tokens": 10_000}
    ]
    a, b = GatewayProcess(doc).start(), GatewayProcess(doc).start()
    try:
        ok, denied, tokens, spent = 0, 0, 0, 0
        for i in range(10):
            client = oa(a if i % 2 else b, **{"x-sidegate-tenant": "shared-t"})
            try:
                usage = hi(client, model="gpt-4o").usage
                tokens += usage.total_tokens
                spent += cost(usage)
                ok += 1
            except openai.RateLimitError:
                denied += 1
        assert (ok, denied) == (5, 5)
        # One counter in Redis, reconciled with every response's real usage.
        wait_until(
            lambda: redis_counters(redis_server, "shared") == [[5, tokens, spent]],
            "5 settled requests in the shared Redis counter",
        )
        assert not counters(a, "shared") and not counters(b, "shared")
    finally:
        a.stop()
        b.stop()


def _outage_doc(
    fakes: dict[str, FakeProvider], port: int, mode: str, timeout: str = "200ms"
) -> dict[str, Any]:
    doc = quota_doc(
        fakes,
        state={
            "redis": {"url": f"redis://127.0.0.1:{port}/0", "timeout": timeout},
            "on_unavailable": mode,
        },
    )
    doc["quotas"] = [{"name": f"outage-{mode}", "window": "1h", "requests": 2}]
    return doc


def test_redis_outage_follows_the_configured_policy(fakes: dict[str, FakeProvider]) -> None:
    port = free_port()  # nothing listens here yet
    gw = GatewayProcess(_outage_doc(fakes, port, "local")).start()
    try:
        client = oa(gw)
        client = client.with_options(timeout=httpx.Timeout(10.0))
        hi(client)
        hi(client)
        with pytest.raises(openai.RateLimitError, match="outage-local"):
            hi(client)  # local counters enforce while Redis is away
        assert counters(gw, "outage-local")[0][0] == 2

        gw.gateway.reload(parse_config(_outage_doc(fakes, port, "closed")))
        with pytest.raises(openai.InternalServerError) as caught:
            hi(client)
        assert caught.value.status_code == 503
        assert caught.value.response.json()["error"]["code"] == "quota_state_unavailable"

        gw.gateway.reload(parse_config(_outage_doc(fakes, port, "open")))
        for _ in range(3):
            hi(client)  # admitted: no quota is enforced while Redis is away

        # Redis comes up on that port: after the pause, counting moves there.
        server = RedisServer()
        server.port = port
        server.start()
        try:
            deadline = time.monotonic() + 10
            while not redis_counters(server, "outage-open") and time.monotonic() < deadline:
                hi(client)
                time.sleep(0.3)
            assert redis_counters(server, "outage-open")
        finally:
            server.stop()
    finally:
        gw.stop()


def test_a_redis_that_never_answers_costs_one_timeout(fakes: dict[str, FakeProvider]) -> None:
    # A listener that completes TCP handshakes but never replies: the worst
    # kind of outage, a hang unless every call is bounded.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    try:
        # Longer than Envoy's 0.5 s per-message timeout: the policy stage must
        # buy itself time (override_message_timeout) instead of a 504.
        doc = _outage_doc(fakes, silent.getsockname()[1], "local", timeout="700ms")
        gw = GatewayProcess(doc).start()
        try:
            client = oa(gw).with_options(timeout=httpx.Timeout(10.0))
            hi(client)
            hi(client)
            with pytest.raises(openai.RateLimitError, match="outage-local"):
                hi(client)
        finally:
            gw.stop()
    finally:
        silent.close()


def test_a_config_whose_state_cannot_be_built_is_refused_whole(
    fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SG_TEST_NO_SUCH_URL", raising=False)
    doc = quota_doc(fakes, state={"redis": {"url": {"env": "SG_TEST_NO_SUCH_URL"}}})
    gateway = Gateway(parse_config(quota_doc(fakes)))
    before = gateway.quotas
    with pytest.raises(ConfigError) as e:
        gateway.prepare(parse_config(doc))
    assert str(e.value) == "state.redis.url: environment variable SG_TEST_NO_SUCH_URL is not set"
    assert gateway.quotas is before and gateway.redis is None
    # The same check runs in `sidegate config check`, before anything serves.
    path = tmp_path / "sidegate.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["config", "check", "-c", str(path)]) == 2


def test_config_check_reports_where_quotas_are_counted(
    fakes: dict[str, FakeProvider], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sidegate.yaml"
    url = "redis://:s3cret-pw@10.0.0.9:6379/0"
    path.write_text(yaml.safe_dump(quota_doc(fakes, state={"redis": {"url": url}})))
    assert main(["config", "check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 quotas counted shared in Redis (redis://10.0.0.9:6379/0)" in out
    assert "s3cret" not in out

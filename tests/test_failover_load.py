"""Failover under load: retries are sized for a sidecar, and bounded when everything fails.

Envoy's default circuit breaker allows 3 concurrent retries per cluster; at 32
concurrent clients with 30 % of first attempts failing, most failed attempts
then reached the client instead of the fallback. These tests drive a real
Envoy with the official SDK at that load and read Envoy's own counters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import KEYS
from tests.envoy_stats import envoy_stats
from tests.harness import GatewayProcess, env_keys

CLIENTS = 32
FAIL_503 = {"x-fake-fault-la": "status=503"}


@pytest.fixture(scope="module")
def load_fakes() -> Iterator[dict[str, FakeProvider]]:
    # Their own fakes: the in-flight gauges must see this module's traffic only.
    env_keys(**KEYS)
    fakes = {
        "la": FakeProvider(api="openai", name="la", key=KEYS["SG_TEST_OA_KEY"], record=False),
        "lb": FakeProvider(api="openai", name="lb", key=KEYS["SG_TEST_OB_KEY"], record=False),
    }
    for f in fakes.values():
        f.start()
    yield fakes
    for f in fakes.values():
        f.stop()


def _doc(fakes: dict[str, FakeProvider], **extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "primary": {
                "api": "openai",
                "base_url": fakes["la"].base_url,
                "keys": [{"env": "SG_TEST_OA_KEY"}],
            },
            "fallback": {
                "api": "openai",
                "base_url": fakes["lb"].base_url,
                "keys": [{"env": "SG_TEST_OB_KEY"}],
            },
        },
        "models": {
            "m-primary": {"provider": "primary", "id": "gpt-4o"},
            "m-fallback": {"provider": "fallback", "id": "gpt-4o-b"},
        },
        "routes": {"fast": [["m-primary"], ["m-fallback"]]},
        "timeouts": {"retry_base": "10ms", "retry_max": "50ms"},
        "envoy": {"access_log": False},
        "forward_headers": {"allow": ["x-fake-fault-*"]},
        **extra,
    }


def _retry_stats(gw: GatewayProcess) -> dict[str, int]:
    """Retry counters summed over the provider clusters.

    Envoy 1.40 charges a retry to the cluster the retry goes to (the route
    refreshes its cluster on retry), so a failover's retry counts on the fallback.
    """
    stats = envoy_stats(gw, r"^cluster\.provider_[a-z]+\.upstream_rq_")
    names = ("upstream_rq_retry", "upstream_rq_retry_overflow", "upstream_rq_total")
    return {n: sum(v for k, v in stats.items() if k.endswith("." + n)) for n in names} | stats


def _counts(fakes: dict[str, FakeProvider]) -> None:
    for f in fakes.values():
        f.max_in_flight = 0


async def _drive(
    gw: GatewayProcess, total: int, headers_for: Any, deadline_s: float = 60.0
) -> list[tuple[int, str | None]]:
    """``total`` chat requests from CLIENTS concurrent SDK callers: (status, provider)."""
    client = openai.AsyncOpenAI(
        base_url=f"{gw.base}/v1", api_key="placeholder", max_retries=0, timeout=30
    )
    queue = iter(range(total))
    results: list[tuple[int, str | None]] = []
    stop = time.monotonic() + deadline_s

    async def worker() -> None:
        for i in queue:
            assert time.monotonic() < stop, f"load did not finish in {deadline_s} s"
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model="fast",
                    messages=[{"role": "user", "content": f"req {i}"}],
                    extra_headers=headers_for(i),
                )
                results.append((raw.http_response.status_code, raw.headers["x-sidegate-provider"]))
            except openai.APIStatusError as e:
                results.append((e.status_code, None))

    try:
        await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    finally:
        await client.close()
    return results


def test_failover_holds_at_32_clients(load_fakes: dict[str, FakeProvider]) -> None:
    gw = GatewayProcess(_doc(load_fakes)).start()
    try:
        total = 1500
        # 3 in 10 first attempts are answered 503; their retries must all reach the fallback.
        failing = {i for i in range(total) if i % 10 < 3}
        results = asyncio.run(_drive(gw, total, lambda i: FAIL_503 if i in failing else {}))
        statuses = [s for s, _ in results]
        assert len(results) == total
        assert statuses.count(200) == total, {s: statuses.count(s) for s in set(statuses)}
        assert sum(p == "fallback" for _, p in results) == len(failing)
        stats = _retry_stats(gw)
        assert stats["upstream_rq_retry_overflow"] == 0, stats
        assert stats["upstream_rq_retry"] == len(failing), stats
    finally:
        gw.stop()


def test_retries_stay_bounded_when_every_provider_fails(
    load_fakes: dict[str, FakeProvider],
) -> None:
    # A tight budget, so that it binds at this load: retries in flight may be
    # 20 % of the requests in flight on the first provider, never fewer than 4.
    doc = _doc(
        load_fakes, circuit_breakers={"retry_budget_percent": 20, "min_retry_concurrency": 4}
    )
    gw = GatewayProcess(doc).start()
    _counts(load_fakes)
    try:
        total = 640
        # Both providers fail, slowly enough that retries overlap.
        down = {
            "x-fake-fault-la": "status=503,stall=0.05",
            "x-fake-fault-lb": "status=503,stall=0.05",
        }
        results = asyncio.run(_drive(gw, total, lambda i: down))
        assert [s for s, _ in results] == [503] * total
        stats = _retry_stats(gw)
        first = stats["cluster.provider_primary.upstream_rq_total"]
        retried, overflowed = stats["upstream_rq_retry"], stats["upstream_rq_retry_overflow"]
        # Every failed first attempt was either retried once (num_retries is 1
        # for two groups) or refused a retry by the budget; nothing more.
        assert first == total and retried + overflowed == total, stats
        assert stats["cluster.provider_fallback.upstream_rq_total"] == retried, stats
        assert overflowed > 0, "the budget never bound: the test load is too light to show it"
        # Retries in flight stay within the budget: 20 % of at most 32 requests, floor 4.
        assert 0 < load_fakes["lb"].max_in_flight <= 7, load_fakes["lb"].max_in_flight
    finally:
        gw.stop()


def test_default_budget_retries_every_failure_of_a_total_outage(
    load_fakes: dict[str, FakeProvider],
) -> None:
    gw = GatewayProcess(_doc(load_fakes)).start()
    try:
        total = 320
        down = {"x-fake-fault-la": "status=503", "x-fake-fault-lb": "status=503"}
        results = asyncio.run(_drive(gw, total, lambda i: down))
        assert [s for s, _ in results] == [503] * total
        stats = _retry_stats(gw)
        # At most one retry per request (the route's num_retries): 2 attempts each.
        assert stats["cluster.provider_primary.upstream_rq_total"] == total, stats
        assert stats["cluster.provider_fallback.upstream_rq_total"] == total, stats
        assert stats["upstream_rq_retry_overflow"] == 0, stats
    finally:
        gw.stop()

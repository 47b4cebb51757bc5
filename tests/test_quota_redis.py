"""The Redis store under pressure and outage: real redis-server, real client.

A stalled Redis is made with ``CLIENT PAUSE`` (Redis stops answering every
other client for that long): the outage a slow failover or a blocked server
causes, with no mock in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from extproc.quota.backlog import Backlog
from extproc.quota.config import RedisConfig, RedisUrl
from extproc.quota.redis_store import MAX_CONNECTIONS, RedisStore, StoreBusy, StoreDown
from extproc.quota.store import UNBOUNDED, Bound
from tests.redisd import RedisServer

NO = UNBOUNDED


def bound(key: str, requests: int = NO) -> Bound:
    return Bound(key=key, ttl=60, limits=(requests, NO, NO), need=(1, 10, 0))


def store_for(server: RedisServer, timeout: float = 1.0) -> RedisStore:
    return RedisStore(
        RedisConfig(url=RedisUrl(server.url), timeout=timeout, key_prefix="t-redis:")
    )


async def until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> float:
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < seconds, f"{what}: not within {seconds}s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def stall(server: RedisServer, ms: int) -> None:
    server.client().execute_command("CLIENT", "PAUSE", ms, "ALL")


def used(server: RedisServer, key: str) -> tuple[int, int]:
    h = server.client().hgetall(f"t-redis:{key}")
    return int(h.get(b"r", 0)), int(h.get(b"t", 0))


def test_concurrent_failures_open_the_circuit_once(redis_server: RedisServer) -> None:
    redis_server.client().flushall()

    async def go() -> None:
        store = store_for(redis_server)
        assert await store.reserve([bound("a")]) is None  # connected and working
        # Longer than a call's timeout: every call in flight fails.
        stall(redis_server, 3000)
        stalled_at = time.monotonic()
        results = await asyncio.gather(
            *(store.reserve([bound("a")]) for _ in range(MAX_CONNECTIONS)), return_exceptions=True
        )
        assert all(isinstance(r, StoreDown) for r in results), results
        # Sixteen calls failed together: one episode, one step of back-off (not 2^16, capped).
        assert store.circuit.opened == 1 and store.circuit.pause == 1.0
        assert sum(r.opened for r in results if isinstance(r, StoreDown)) == 1
        # While open, nothing is asked: refusals are immediate.
        t = time.monotonic()
        with pytest.raises(StoreDown):
            await store.reserve([bound("a")])
        assert time.monotonic() - t < 0.05

        async def back() -> bool:
            try:
                return await store.reserve([bound("a")]) is None
            except StoreDown:
                return False

        # Single probes, doubling: Redis is used again soon after the stall ends.
        waited = await until(back, 10, "Redis used again after the stall")
        assert time.monotonic() - stalled_at - 3.0 < 3.5, waited
        assert not store.circuit.is_open and store.circuit.pause == 1.0
        await store.close()

    asyncio.run(go())


def test_a_full_pool_is_busy_not_down(redis_server: RedisServer) -> None:
    redis_server.client().flushall()

    async def go() -> None:
        store = store_for(redis_server, timeout=2.0)  # patient calls, to fill the pool
        assert await store.reserve([bound("b")]) is None
        stall(redis_server, 1500)  # every connection held by a call that waits
        calls = [asyncio.ensure_future(store.reserve([bound("b")])) for _ in range(40)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        busy = [r for r in results if isinstance(r, StoreBusy)]
        # Those that got a connection waited out the stall and were served; those that
        # queued longer than QUEUE_WAIT were refused as busy. Nothing opened the circuit.
        assert busy and len(busy) <= 40 - MAX_CONNECTIONS, results
        assert all(r is None for r in results if not isinstance(r, StoreBusy)), results
        assert store.circuit.opened == 0 and store.busy == len(busy)
        await store.close()

    asyncio.run(go())


def test_reconciliations_during_an_outage_are_sent_when_it_ends(
    redis_server: RedisServer,
) -> None:
    redis_server.client().flushall()

    async def go() -> None:
        store = store_for(redis_server)
        for _ in range(3):
            store.hold()
            assert await store.reserve([bound("c")]) is None
        assert used(redis_server, "c") == (3, 30)
        stall(redis_server, 3000)
        for _ in range(3):
            store.correct(["c"], 90, 0)  # each used 100 tokens, not 10

        async def queued() -> bool:
            return len(store.backlog) == 3

        await until(queued, 5, "corrections queued while Redis is stalled")

        async def sent() -> bool:
            with contextlib.suppress(StoreDown):
                await store.reserve([bound("other")])
            return not store.backlog

        await until(sent, 10, "the backlog sent after the stall")
        assert used(redis_server, "c") == (3, 300)
        assert store.backlog.retried == 3 and store.backlog.lost == 0
        await store.close()

    asyncio.run(go())


def test_reconciliations_that_cannot_be_kept_are_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backlog = Backlog("redis://db:6379/0", limit=2)
    with caplog.at_level(logging.ERROR):
        backlog.add(["k"], 100, 5, "op1")
        backlog.add(["k"], -40, 0, "op2")
        backlog.add(["k"], 7, 0, "op3")  # the oldest (100 tokens) is dropped
        assert (backlog.lost, backlog.lost_tokens, len(backlog)) == (1, 100, 2)
        backlog.lose_all("the gateway stopped")
    assert (backlog.lost, backlog.lost_tokens) == (3, 147)
    text = caplog.text
    assert "1 reconciliations lost (100 tokens" in text and "2 reconciliations lost (47 tokens" in text


def test_a_retired_store_closes_after_its_last_settlement(redis_server: RedisServer) -> None:
    redis_server.client().flushall()

    async def go() -> None:
        store = store_for(redis_server)
        store.hold()
        assert await store.reserve([bound("d")]) is None
        store.retire()  # a reload replaced it; one request is still in flight
        await asyncio.sleep(0.05)
        assert not store.closed
        store.correct(["d"], 5, 0)

        async def closed() -> bool:
            return store.closed and not store._tasks

        await until(closed, 5, "the retired store closed")
        assert used(redis_server, "d") == (1, 15)  # the last correction landed first

    asyncio.run(go())


def test_the_url_is_a_secret() -> None:
    config = RedisConfig(url=RedisUrl("redis://:hunter2@10.0.0.1:6380/2"))
    for text in (repr(config), str(config), repr(config.url), config.describe()):
        assert "hunter2" not in text, text
    assert "10.0.0.1:6380" in repr(config)


def test_a_cold_client_on_a_stalled_redis_costs_one_timeout(redis_server: RedisServer) -> None:
    redis_server.client().flushall()

    async def go() -> float:
        store = store_for(redis_server, timeout=0.5)
        stall(redis_server, 3000)
        started = time.monotonic()
        results = await asyncio.gather(
            *(store.reserve([bound("e")]) for _ in range(20)), return_exceptions=True
        )
        elapsed = time.monotonic() - started
        assert all(isinstance(r, StoreDown) for r in results), results
        assert store.circuit.opened == 1
        await store.close()
        return elapsed

    # Twenty calls wait on one first connection: they fail together, not in turn.
    assert asyncio.run(go()) < 1.5

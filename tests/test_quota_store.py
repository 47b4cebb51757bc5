"""The quota store contract, held by the in-process store and by real Redis alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from extproc.config import KeySource
from extproc.quota.config import RedisConfig, RedisUrl
from extproc.quota.redis_store import RedisStore, resolve_url
from extproc.quota.store import UNBOUNDED, Bound, Denial, MemoryStore, Store
from tests.redisd import RedisServer

NO = UNBOUNDED


def bound(
    key: str, limits: tuple[int, int, int], need: tuple[int, int, int], ttl: float = 60
) -> Bound:
    return Bound(key=key, ttl=ttl, limits=limits, need=need)


@pytest.fixture(params=["memory", "redis"])
def make_store(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[], Store]]:
    if request.param == "memory":
        shared = MemoryStore()
        yield lambda: shared
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    server.client().flushall()
    prefix = f"test-{time.monotonic_ns()}:"
    yield lambda: RedisStore(RedisConfig(url=RedisUrl(server.url), key_prefix=prefix))


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _used(store: Store, key: str) -> tuple[int, int, int] | None:
    if isinstance(store, MemoryStore):
        return store.used(key)
    assert isinstance(store, RedisStore)
    raw = await store.client.hgetall(store.key(key))
    if not raw:
        return None
    return (int(raw[b"r"]), int(raw[b"t"]), int(raw[b"c"]))


def test_reserve_counts_until_the_limit(make_store: Callable[[], Store]) -> None:
    async def go() -> None:
        store = make_store()
        b = bound("k1", (2, 100, NO), (1, 40, 0))
        assert await store.reserve([b]) is None
        assert await store.reserve([b]) is None
        assert await store.reserve([b]) == Denial(0, 0, 2)  # requests exhausted
        assert await _used(store, "k1") == (2, 80, 0)
        await store.close()

    run(go())


def test_all_or_nothing_across_counters(make_store: Callable[[], Store]) -> None:
    async def go() -> None:
        store = make_store()
        roomy = bound("a", (NO, 1000, NO), (1, 60, 5))
        tight = bound("b", (NO, 100, NO), (1, 60, 5))
        assert await store.reserve([roomy, tight]) is None
        # The second quota has no room: the first must not be charged either.
        assert await store.reserve([roomy, tight]) == Denial(1, 1, 60)
        assert await _used(store, "a") == (1, 60, 5)
        assert await _used(store, "b") == (1, 60, 5)
        await store.close()

    run(go())


def test_over_the_limit_blocks_even_a_zero_need(make_store: Callable[[], Store]) -> None:
    async def go() -> None:
        store = make_store()
        b = bound("k", (NO, 100, NO), (1, 10, 0))
        assert await store.reserve([b]) is None
        await store.adjust(["k"], 200, 0)  # real usage overran the window
        assert await store.reserve([bound("k", (NO, 100, NO), (1, 0, 0))]) == Denial(0, 1, 210)
        await store.close()

    run(go())


def test_adjust_never_revives_an_ended_window(make_store: Callable[[], Store]) -> None:
    async def go() -> None:
        store = make_store()
        assert await store.reserve([bound("short", (NO, 100, NO), (1, 10, 0), ttl=0.2)]) is None
        await asyncio.sleep(0.3)
        await store.adjust(["short"], 50, 7)
        assert await _used(store, "short") is None
        await store.close()

    run(go())


def test_refund_and_cost_adjustments(make_store: Callable[[], Store]) -> None:
    async def go() -> None:
        store = make_store()
        assert await store.reserve([bound("m", (NO, NO, 1000), (1, 100, 400))]) is None
        await store.adjust(["m"], -100, -400)
        assert await _used(store, "m") == (1, 0, 0)
        await store.close()

    run(go())


def test_concurrent_reservations_share_one_limit_exactly(redis_server: RedisServer) -> None:
    """Four sidecars' clients race for 50 requests: exactly 50 win."""
    redis_server.client().flushall()

    async def go() -> int:
        stores = [RedisStore(RedisConfig(url=RedisUrl(redis_server.url), timeout=2.0)) for _ in range(4)]
        b = bound("race", (50, NO, NO), (1, 0, 0))
        results = await asyncio.gather(*(stores[i % 4].reserve([b]) for i in range(200)))
        for s in stores:
            await s.close()
        return sum(r is None for r in results)

    assert run(go()) == 50


def test_url_from_env_and_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SG_TEST_REDIS_URL", "redis://:hunter2@10.0.0.1:6380/2")
    assert resolve_url(KeySource(env="SG_TEST_REDIS_URL")).endswith("/2")
    f = tmp_path / "url"
    f.write_text("redis://db:6379/0\n")
    assert resolve_url(KeySource(file=str(f))) == "redis://db:6379/0"
    monkeypatch.delenv("SG_TEST_REDIS_URL")
    with pytest.raises(ValueError, match="SG_TEST_REDIS_URL is not set"):
        resolve_url(KeySource(env="SG_TEST_REDIS_URL"))
    # Where the state lives is logged; the password never is.
    described = RedisConfig(url=RedisUrl("redis://:hunter2@10.0.0.1:6380/2")).describe()
    assert "hunter2" not in described and "10.0.0.1:6380" in described


def test_a_burst_beyond_the_pool_waits_for_a_connection(redis_server: RedisServer) -> None:
    redis_server.client().flushall()

    async def go() -> list[Denial | None]:
        store = RedisStore(RedisConfig(url=RedisUrl(redis_server.url), timeout=2.0))
        b = bound("burst", (NO, NO, NO), (1, 1, 0))
        try:
            return await asyncio.gather(*(store.reserve([b]) for _ in range(500)))
        finally:
            await store.close()

    assert run(go()) == [None] * 500
    assert int(redis_server.client().hget("sidegate:burst", "r") or 0) == 500


def test_a_million_distinct_users_keep_the_local_table_bounded() -> None:
    """Client-chosen user names must not grow memory: the table stays at its bound."""
    store = MemoryStore()
    limit = store.max_counters
    regular = bound("user=regular", (5, NO, NO), (1, 0, 0), ttl=30 * 86400)
    assert store.reserve_now([regular]) is None
    started = time.monotonic()
    for i in range(1_000_000):
        store.reserve_now([Bound(f"user=u{i}", 30 * 86400, (5, NO, NO), (1, 0, 0))])
        if i % 10_000 == 0:
            store.reserve_now([regular])  # an active caller, in the middle of the flood
    assert len(store) == limit
    assert store.evicted == 1_000_000 + 1 - limit
    # The active caller was never forgotten: its quota still holds.
    assert store.used("user=regular") == (5, 0, 0)
    assert store.reserve_now([regular]) == Denial(0, 0, 5)
    # An evicted caller starts again from zero (what eviction means for enforcement).
    assert store.used("user=u0") is None
    assert time.monotonic() - started < 30

"""Quotas in a real Redis Cluster: three primaries on this machine, created offline."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import openai
import pytest

from extproc.devtools.fake_provider import FakeProvider
from extproc.quota.config import RedisConfig, RedisUrl
from extproc.quota.redis_store import RedisStore, StoreBusy, StoreDown, slot_prefix
from extproc.quota.store import UNBOUNDED, Bound, Denial
from tests.harness import GatewayProcess
from tests.redisd import RedisCluster, require_redis
from tests.test_quotas import counters, hi, oa, quota_doc

NO = UNBOUNDED


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    require_redis()
    c = RedisCluster().start()
    yield c
    c.stop()


def keys_of(cluster: RedisCluster) -> dict[int, list[bytes]]:
    found = {}
    for node in cluster.nodes:
        found[node.port] = list(node.client().scan_iter("*"))
    return found


def test_one_script_over_counters_of_many_callers(cluster: RedisCluster) -> None:
    async def go() -> None:
        store = RedisStore(RedisConfig(url=RedisUrl(cluster.url), cluster=True))
        # Keys that would hash to different slots (and nodes) without a hash tag.
        tenant = Bound("q:t:1h:0:tenant=acme", 60, (NO, 100, NO), (1, 40, 0))
        users = [Bound(f"q:u:1h:0:user=u{i}", 60, (2, NO, NO), (1, 40, 0)) for i in range(3)]
        assert await store.reserve([tenant, users[0]]) is None
        assert await store.reserve([tenant, users[1]]) is None
        # The tenant's 100 tokens are spent (80 + 40 > 100): all or nothing across slots.
        assert await store.reserve([tenant, users[2]]) == Denial(0, 1, 80)
        await store.adjust([tenant.key, users[0].key], -30, 0)
        assert await store.reserve([tenant, users[2]]) is None
        await store.close()

    asyncio.run(go())
    # Every counter lives on one node, in the slot of the tagged prefix.
    holding = {port: ks for port, ks in keys_of(cluster).items() if ks}
    assert len(holding) == 1, holding
    (ks,) = holding.values()
    assert all(k.startswith(b"{sidegate:}q:") or k.startswith(b"{sidegate:}op:") for k in ks), ks


def test_concurrent_reservations_in_the_cluster_are_exact(cluster: RedisCluster) -> None:
    async def go() -> int:
        stores = [
            RedisStore(RedisConfig(url=RedisUrl(cluster.url), cluster=True, key_prefix="race:"))
            for _ in range(2)
        ]
        b = Bound("q:race", 60, (50, NO, NO), (1, 0, 0))

        async def one(store: RedisStore) -> Denial | None:
            # A busy store (every connection taken on a loaded machine) has not
            # decided: ask again, as a client told "503, retry" would.
            while True:
                try:
                    return await store.reserve([b])
                except StoreBusy:
                    await asyncio.sleep(0.05)

        results = await asyncio.gather(*(one(stores[i % 2]) for i in range(250)))
        for s in stores:
            await s.close()
        return sum(r is None for r in results)

    assert asyncio.run(go()) == 50


def test_a_plain_client_pointed_at_a_cluster_says_what_to_set(cluster: RedisCluster) -> None:
    async def go() -> str:
        # Some node refuses a key that is not its own (MOVED): find that node.
        messages = []
        for node in cluster.nodes:
            store = RedisStore(RedisConfig(url=RedisUrl(node.url), timeout=0.5))
            try:
                await store.reserve([Bound("q:x", 60, (5, NO, NO), (1, 0, 0))])
            except StoreDown as e:
                messages.append(str(e))
            await store.close()
        return " | ".join(messages)

    assert "set state.redis.cluster: true" in asyncio.run(go())


def test_prefix_tag() -> None:
    assert slot_prefix("sidegate:") == "{sidegate:}"
    assert slot_prefix("{team-a}:sg:") == "{team-a}:sg:"
    assert slot_prefix("a{}b:") == "{a{}b:}"  # an empty tag hashes the whole key: not a tag


def test_a_gateway_counts_in_the_cluster(
    cluster: RedisCluster, fakes: dict[str, FakeProvider]
) -> None:
    doc = quota_doc(fakes, state={"redis": {"url": cluster.url, "cluster": True}})
    doc["quotas"] = [
        {"name": "cl-user", "per": ["user"], "window": "1h", "requests": 3},
        {"name": "cl-tenant", "per": ["tenant"], "window": "1h", "tokens": 100_000},
    ]
    gw = GatewayProcess(doc).start()
    try:
        client = oa(gw, **{"x-sidegate-user": "cluster-user"})
        for _ in range(3):
            hi(client)
        with pytest.raises(openai.RateLimitError, match="'cl-user' for user cluster-user"):
            hi(client)
        hi(oa(gw, **{"x-sidegate-user": "another"}))
        assert not counters(gw, "cl-user") and not counters(gw, "cl-tenant")
    finally:
        gw.stop()
    counted = {
        k: node.client().hget(k, "r")
        for node in cluster.nodes
        for k in node.client().scan_iter("{sidegate:}q:cl-*")
    }
    assert sorted(int(v or 0) for v in counted.values()) == [1, 3, 4], counted

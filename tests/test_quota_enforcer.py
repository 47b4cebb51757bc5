"""The enforcer without Envoy: admission, settlement and a caller that leaves mid-admission."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Any

from extproc.apis import ClientApi
from extproc.config import parse_config
from extproc.quota.caller import Caller
from extproc.quota.config import RedisConfig, RedisUrl
from extproc.quota.enforcer import QuotaEnforcer, Reservation
from extproc.quota.store import Bound, Denial, MemoryStore
from tests.test_config import BASE

BODY = {
    "model": "gpt-4o",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "hello there"}],
}


class SlowStore(MemoryStore):
    """Counts like the local store, after a pause: a Redis far away."""

    name = "slow"

    def __init__(self) -> None:
        super().__init__()
        self.config = RedisConfig(url=RedisUrl("redis://slow:6379/0"), timeout=1.0)
        self.gate = asyncio.Event()

    async def reserve(self, bounds: Sequence[Bound]) -> Denial | None:
        await self.gate.wait()
        return self.reserve_now(bounds)

    def hold(self) -> None:
        pass


def enforcer(remote: Any = None) -> QuotaEnforcer:
    doc: dict[str, Any] = copy.deepcopy(BASE)
    doc["quotas"] = [{"name": "tpm", "window": "1h", "tokens": 1000, "requests": 10}]
    config = parse_config(doc)
    return QuotaEnforcer(
        config.quota,
        config.models,
        config.routes,
        local=MemoryStore(),
        remote=remote,
    )


def test_a_caller_that_leaves_mid_admission_gets_its_tokens_back() -> None:
    async def go() -> tuple[int, int, int] | None:
        store = SlowStore()
        quotas = enforcer(store)
        admission = asyncio.ensure_future(
            quotas.admit(Caller(), "gpt-4o", ClientApi.OPENAI_CHAT, BODY, 100)
        )
        waiter = asyncio.ensure_future(asyncio.shield(admission))
        await asyncio.sleep(0.01)
        waiter.cancel()  # what the policy stage sees when Envoy drops the stream
        quotas.abandoned(admission)
        store.gate.set()
        reservation = await admission
        assert isinstance(reservation, Reservation) and reservation.tokens > 0
        await asyncio.sleep(0.01)
        (key,) = reservation.keys
        return store.used(key)

    # The request stays counted; its tokens do not.
    assert asyncio.run(go()) == (1, 0, 0)

"""Quota counters: what a store must do, and the in-process store.

A store keeps, per counter key, three integers (requests, tokens,
micro-dollars) that vanish when their window ends. ``reserve`` is one atomic
check-and-add over all the counters a request touches: either every counter
has room and all are incremented, or none is. That is what lets N sidecars
share one Redis budget exactly; the in-process store gives the same answer for
one sidecar.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

UNBOUNDED = -1
COUNTERS = ("requests", "tokens", "micro_usd")


@dataclass(frozen=True, slots=True)
class Bound:
    """One quota's counter in its current window, and what a request needs of it."""

    key: str
    ttl: float  # seconds the counter must outlive the window by (window end + grace)
    limits: tuple[int, int, int]  # requests, tokens, micro_usd; UNBOUNDED for none
    need: tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Denial:
    index: int  # which bound, in the order given
    counter: int  # 0 requests, 1 tokens, 2 micro_usd
    used: int


class Store(Protocol):
    name: str
    errors: tuple[type[Exception], ...]  # what a call may raise when the store is away

    async def reserve(self, bounds: Sequence[Bound]) -> Denial | None:
        """Add every bound's need, unless one would pass its limit: then add nothing."""

    async def adjust(self, keys: Sequence[str], tokens: int, micro_usd: int) -> None:
        """Correct counters that still exist by real usage (never resurrects an ended window)."""

    async def close(self) -> None: ...


class MemoryStore:
    """Counters in this process: the embedded default, and the fallback when Redis is away."""

    name = "local"
    errors: tuple[type[Exception], ...] = ()
    _SWEEP_EVERY = 1024

    def __init__(self) -> None:
        self._counters: dict[str, list[int]] = {}
        self._expires: dict[str, float] = {}
        self._ops = 0

    def _live(self, key: str, now: float) -> list[int] | None:
        expires = self._expires.get(key)
        if expires is None:
            return None
        if expires <= now:
            del self._expires[key]
            del self._counters[key]
            return None
        return self._counters[key]

    def _sweep(self, now: float) -> None:
        self._ops += 1
        if self._ops % self._SWEEP_EVERY:
            return
        for key in [k for k, t in self._expires.items() if t <= now]:
            del self._expires[key]
            del self._counters[key]

    def reserve_now(self, bounds: Sequence[Bound]) -> Denial | None:
        now = time.monotonic()
        self._sweep(now)
        current = [self._live(b.key, now) or [0, 0, 0] for b in bounds]
        for i, (b, used) in enumerate(zip(bounds, current, strict=True)):
            for c in range(3):
                if b.limits[c] != UNBOUNDED and used[c] + b.need[c] > b.limits[c]:
                    return Denial(i, c, used[c])
        for b, used in zip(bounds, current, strict=True):
            if b.key not in self._counters:
                self._counters[b.key] = used
                self._expires[b.key] = now + b.ttl
            for c in range(3):
                used[c] += b.need[c]
        return None

    def adjust_now(self, keys: Sequence[str], tokens: int, micro_usd: int) -> None:
        now = time.monotonic()
        for key in keys:
            used = self._live(key, now)
            if used is not None:
                used[1] += tokens
                used[2] += micro_usd

    def used(self, key: str) -> tuple[int, int, int] | None:
        found = self._live(key, time.monotonic())
        return None if found is None else (found[0], found[1], found[2])

    async def reserve(self, bounds: Sequence[Bound]) -> Denial | None:
        return self.reserve_now(bounds)

    async def adjust(self, keys: Sequence[str], tokens: int, micro_usd: int) -> None:
        self.adjust_now(keys, tokens, micro_usd)

    async def close(self) -> None:
        return None

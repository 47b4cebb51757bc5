"""Quota counters: what a store must do, and the in-process store.

A store keeps, per counter key, three integers (requests, tokens,
micro-dollars) that vanish when their window ends. ``reserve`` is one atomic
check-and-add over all the counters a request touches: either every counter
has room and all are incremented, or none is. That is what lets N sidecars
share one Redis budget exactly; the in-process store gives the same answer for
one sidecar.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

UNBOUNDED = -1
# Local counters kept at most: ~200 bytes each, so about 20 MiB when full.
MAX_COUNTERS = 100_000
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
    """Counters in this process: the embedded default, and the fallback when Redis is away.

    The table is bounded. Callers are keyed by values the client chooses (its
    ``user``), and a monthly counter lives for a month, so without a bound
    random user names would grow it without end. When it is full, the counter
    used least recently is forgotten: if that caller comes back within the
    same window it starts again from zero. Active callers stay; an attacker
    who invents users gains nothing by it that the invented names did not
    already give (each is a fresh caller anyway).
    """

    name = "local"
    errors: tuple[type[Exception], ...] = ()
    _SWEEP_EVERY = 10.0  # seconds between sweeps of ended windows

    def __init__(self, max_counters: int = MAX_COUNTERS) -> None:
        self.max_counters = max_counters
        # Least recently used first: eviction pops from the front.
        self._counters: OrderedDict[str, list[int]] = OrderedDict()
        self._expires: dict[str, float] = {}
        self._swept = time.monotonic()
        self.evicted = 0  # counters forgotten while their window was still open
        self._evicted_logged = 0
        self._last_log = float("-inf")

    def __len__(self) -> int:
        return len(self._counters)

    def _live(self, key: str, now: float) -> list[int] | None:
        expires = self._expires.get(key)
        if expires is None:
            return None
        if expires <= now:
            del self._expires[key]
            del self._counters[key]
            return None
        self._counters.move_to_end(key)
        return self._counters[key]

    def _sweep(self, now: float) -> None:
        if now - self._swept < self._SWEEP_EVERY:
            return
        self._swept = now
        for key in [k for k, t in self._expires.items() if t <= now]:
            del self._expires[key]
            del self._counters[key]

    def _insert(self, key: str, used: list[int], expires: float, now: float) -> None:
        while len(self._counters) >= self.max_counters:
            old, _ = self._counters.popitem(last=False)
            if self._expires.pop(old) > now:
                self.evicted += 1
        if self.evicted != self._evicted_logged and now - self._last_log >= 60:
            log.warning(
                "local quota table full (%d counters): %d counters of open windows "
                "forgotten so far, least recently used first",
                self.max_counters,
                self.evicted,
            )
            self._evicted_logged, self._last_log = self.evicted, now
        self._counters[key] = used
        self._expires[key] = expires

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
                self._insert(b.key, used, now + b.ttl, now)
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

"""Reconciliations that could not reach Redis, kept to be sent once it is back.

Bounded: when full, the oldest is dropped and its tokens are counted as lost
(and said so in the log), as is whatever is still queued when the store is
closed. A correction applies only to counters that still exist, so one that
arrives after its window ended changes nothing.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_BACKLOG = 10_000


@dataclass(frozen=True, slots=True)
class Correction:
    keys: tuple[str, ...]
    tokens: int
    micro_usd: int
    op: str  # its id: a retry of a correction Redis did apply changes nothing


class Backlog:
    def __init__(self, where: str, limit: int = MAX_BACKLOG) -> None:
        self.where = where
        self.limit = limit
        self._queue: deque[Correction] = deque()
        self.retried = 0  # corrections that failed once and were sent later
        self.lost = 0  # corrections never sent
        self.lost_tokens = 0  # the sum of their token corrections, in absolute value
        self.lost_micro_usd = 0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, keys: Sequence[str], tokens: int, micro_usd: int, op: str) -> None:
        if len(self._queue) >= self.limit:
            self.lose([self._queue.popleft()], "the reconciliation backlog is full")
        self._queue.append(Correction(tuple(keys), tokens, micro_usd, op))

    def take(self) -> Correction | None:
        return self._queue.popleft() if self._queue else None

    def put_back(self, c: Correction) -> None:
        self._queue.appendleft(c)

    def lose(self, corrections: Sequence[Correction], why: str) -> None:
        if not corrections:
            return
        tokens = sum(abs(c.tokens) for c in corrections)
        micro = sum(abs(c.micro_usd) for c in corrections)
        self.lost += len(corrections)
        self.lost_tokens += tokens
        self.lost_micro_usd += micro
        log.error(
            "quota state at %s: %d reconciliations lost (%d tokens, $%.6f) because %s; "
            "%d lost in all (%d tokens)",
            self.where,
            len(corrections),
            tokens,
            micro / 1_000_000,
            why,
            self.lost,
            self.lost_tokens,
        )

    def lose_all(self, why: str) -> None:
        rest = list(self._queue)
        self._queue.clear()
        self.lose(rest, why)

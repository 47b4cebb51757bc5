"""When to ask a remote store again after it failed.

A failure *episode* opens the circuit once: every call already in flight when
Redis went away fails too, but those failures say nothing new and must not
lengthen the pause. While open, nothing is asked; when the pause is over, one
call at a time probes (the others keep the fallback), and each failed probe
doubles the pause up to a cap. One success closes it.
"""

from __future__ import annotations

PAUSE_MIN, PAUSE_MAX = 1.0, 8.0


class Circuit:
    def __init__(self, pause_min: float = PAUSE_MIN, pause_max: float = PAUSE_MAX) -> None:
        self.pause_min, self.pause_max = pause_min, pause_max
        self.pause = pause_min  # the length of the current (or next) open spell
        self.open_until = 0.0  # monotonic; meaningful while ``is_open``
        self.is_open = False
        self.opened = 0  # episodes so far (for tests and logs)
        self._epoch = 0  # changes whenever the state does
        self._probing = False

    def ticket(self, now: float) -> int | None:
        """Permission for one call (its ticket), or None while the circuit is open."""
        if not self.is_open:
            return self._epoch
        if now < self.open_until or self._probing:
            return None
        self._probing = True
        return self._epoch

    def failed(self, ticket: int, now: float) -> bool:
        """Record a failed call; True when it opened the circuit or extended it."""
        if ticket != self._epoch:
            return False  # began before the current episode: already accounted for
        if self.is_open:
            self.pause = min(self.pause * 2, self.pause_max)  # a failed probe
        else:
            self.is_open, self.pause = True, self.pause_min
            self.opened += 1
        self.open_until = now + self.pause
        self._epoch += 1
        self._probing = False
        return True

    def succeeded(self) -> bool:
        """Record a successful call; True when it closed the circuit."""
        if not self.is_open:
            return False
        self.is_open, self.pause, self._probing = False, self.pause_min, False
        self._epoch += 1
        return True

    def current(self, ticket: int) -> bool:
        """Nothing changed since ``ticket`` was given (no failure opened or extended it)."""
        return ticket == self._epoch

    def released(self, ticket: int) -> None:
        """A call ended with neither verdict (it was cancelled, or the store was busy)."""
        if ticket == self._epoch and self.is_open:
            self._probing = False

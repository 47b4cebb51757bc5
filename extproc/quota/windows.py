"""Fixed quota windows, aligned to the UTC clock so every sidecar agrees on them."""

from __future__ import annotations

from datetime import UTC, datetime

from .config import MONTH


def current(window: float, now: float) -> tuple[int, float]:
    """The index of the window holding ``now`` (epoch seconds) and when it ends."""
    if window == MONTH:
        t = datetime.fromtimestamp(now, UTC)
        year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
        return t.year * 12 + t.month - 1, datetime(year, month, 1, tzinfo=UTC).timestamp()
    index = int(now // window)
    return index, (index + 1) * window

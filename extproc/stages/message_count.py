"""ext_proc messages and streams counted per stage: what each request shape costs.

Every message Envoy sends to Python is a gRPC frame to decode, a task switch and
a reply to encode; their number, more than the handlers' work, is what a
request costs in CPU. The server bumps these counters in its ``Process`` loop
(a dict update per message); the tests pin each request shape's count, and
``sidegate bench`` reads them (``stats_service``) to print messages per request.
"""

from __future__ import annotations

from typing import Final

# The stages a stream may belong to; the keys never come from client input
# (the message kinds are the ProcessingRequest oneof's few names).
STAGES: Final = ("policy", "provider")


class MessageCounts:
    """Messages received (per stage and kind) and streams opened, since the process started."""

    __slots__ = ("messages", "streams")

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, int]] = {s: {} for s in STAGES}
        self.streams: dict[str, int] = dict.fromkeys(STAGES, 0)

    def add(self, stage: str, kind: str) -> None:
        per = self.messages[stage]
        per[kind] = per.get(kind, 0) + 1

    @property
    def total(self) -> int:
        return sum(n for per in self.messages.values() for n in per.values())

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Plain data: ``{"streams": {stage: n}, "<stage>": {kind: n}}``."""
        return {"streams": dict(self.streams), **{s: dict(m) for s, m in self.messages.items()}}

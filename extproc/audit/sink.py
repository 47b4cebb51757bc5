"""What every audit sink is: a chain of its own, and batches of records written in order.

A sink seals each record body into its own chain (``chain``) and writes the
lines. A write that fails raises ``SinkFailed`` after undoing what it began:
the chain head goes back to the last record really written, so when the sink
works again its chain goes on without a hole (and a ``lost`` record says what
was missed). The writer (``writer``) owns the failure policy.
"""

from __future__ import annotations

import abc
import datetime
from collections.abc import Sequence

from .chain import VERSION, Chain, Link


def utc_now() -> str:
    """The time records carry: UTC, RFC 3339, microseconds."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def marker(kind: str, **fields: object) -> dict[str, object]:
    """A record about the chain itself (see ``chain``), not about a request."""
    return {"v": VERSION, "kind": kind, "time": utc_now(), **fields}


class SinkFailed(Exception):
    """A sink could not take a batch: ``reason`` is safe to log and to show a caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Sink(abc.ABC):
    # Shown in logs and in the 503 a caller gets while the sink fails.
    name: str
    # The durable mode waits for this sink before a response ends. A sink that
    # cannot say when a record is safe (OTLP: a collector acknowledges later)
    # is not waited for.
    durable: bool = True

    def __init__(self) -> None:
        self.chain = Chain()

    @abc.abstractmethod
    def open(self) -> list[dict[str, object]]:
        """Get ready to write; return marker records (``chain``) to write first."""

    @abc.abstractmethod
    def write(self, bodies: Sequence[bytes], sync: bool) -> None:
        """Seal and write ``bodies``; with ``sync``, make them durable before returning."""

    @abc.abstractmethod
    def close(self) -> None:
        """Make what was written durable and release the sink."""

    def rollback(self, head: Link | None) -> None:
        self.chain.head = head

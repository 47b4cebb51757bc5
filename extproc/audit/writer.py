"""The audit writer: a thread that writes records to every sink, off the event loop.

The event loop only appends a record to a bounded queue. The thread drains
the queue, encodes each record once, and hands the batch to every sink:

- ``sync``: at once, each batch written and fsynced before the records'
  waiters are told (requests that end together share one fsync);
- ``batch``: every ``flush_interval``, written and fsynced together; nobody
  waits.

A sink that fails (full disk, unwritable or replaced file, closed stdout) is
failing until a write to it succeeds again; the thread retries it every
``RETRY_INTERVAL`` even with no traffic (the ``lost`` record it then writes is
the probe). Each episode is logged once when it starts and once when it ends,
with the number of records lost; ``lost`` counts them all. What requests do
meanwhile is ``audit.on_failure``'s (``AuditLog``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .. import __version__
from .chain import canonical, mac_name
from .config import AuditConfig, Durability, OnFailure
from .sink import Sink, SinkFailed, marker, utc_now

log = logging.getLogger(__name__)

RETRY_INTERVAL = 1.0
QUEUE_SINK = "the audit writer's queue"


@dataclass(slots=True)
class SinkHealth:
    opened: bool = False
    reason: str | None = None  # why it fails now; None while it works
    since: str = ""  # when the episode began
    lost: int = 0  # records lost in this episode


Waiter = concurrent.futures.Future[bool]


class AuditWriter:
    def __init__(self, cfg: AuditConfig, sinks: Sequence[Sink]) -> None:
        self.cfg = cfg
        self.sinks = list(sinks)
        self.health = {id(s): SinkHealth() for s in self.sinks}
        self._queue: deque[tuple[dict[str, object], Waiter | None]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Read from the event loop: plain attributes, replaced whole.
        self.failing: str | None = None  # why a durable sink fails (naming it), or None
        self.lost: dict[str, int] = {s.name: 0 for s in self.sinks}
        self.lost[QUEUE_SINK] = 0
        self.written = 0
        self._queue_full_since: float | None = None

    # -- the event loop's side ----------------------------------------------------

    def submit(self, record: dict[str, object], wait: bool) -> Waiter | None:
        """Queue ``record``; with ``wait``, a future told whether durable sinks took it.

        Never blocks. A full queue (the disk is slower than the traffic) loses
        the record, counted and logged like a failing sink.
        """
        waiter: Waiter | None = concurrent.futures.Future() if wait else None
        with self._cond:
            if len(self._queue) >= self.cfg.queue_size:
                self.lost[QUEUE_SINK] += 1
                if self._queue_full_since is None:
                    self._queue_full_since = time.monotonic()
                    self.failing = f"{QUEUE_SINK} is full ({self.cfg.queue_size} records)"
                    log.error(
                        "audit: %s is full (%d records): records are being lost",
                        QUEUE_SINK,
                        self.cfg.queue_size,
                    )
                if waiter is not None:
                    waiter.set_result(False)
                return waiter
            self._queue.append((record, waiter))
            if (
                self.cfg.durability is Durability.SYNC
                or len(self._queue) * 2 >= self.cfg.queue_size
            ):
                self._cond.notify()
        return waiter

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Open the sinks (a failing one follows the policy) and start the thread."""
        for sink in self.sinks:
            self._open(sink)
        self._update_failing()
        self._thread = threading.Thread(target=self._run, name="sidegate-audit", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then close every sink."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("audit: the writer did not finish within %gs", timeout)
                return
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:  # a sink's own error must not stop the others closing
                log.error("audit: %s: %s at close", sink.name, e)

    # -- the thread -------------------------------------------------------------------

    def _open(self, sink: Sink) -> None:
        health = self.health[id(sink)]
        try:
            notes = sink.open()
        except SinkFailed as e:
            self._failed(sink, e.reason, 0)
            return
        health.opened = True
        notes.insert(
            0,
            marker(
                "start",
                pid=os.getpid(),
                sidegate=__version__,
                durability=self.cfg.durability.value,
                mac=mac_name(sink.chain.key),
            ),
        )
        self._write(sink, [canonical(n) for n in notes], counted=0)

    def _run(self) -> None:
        batch_mode = self.cfg.durability is Durability.BATCH
        while True:
            with self._cond:
                deadline = time.monotonic() + self.cfg.flush_interval if batch_mode else None
                while not self._stopping:
                    if self._queue and (
                        not batch_mode or len(self._queue) * 2 >= self.cfg.queue_size
                    ):
                        break
                    now = time.monotonic()
                    if deadline is not None and now >= deadline:
                        break
                    timeout = None if deadline is None else deadline - now
                    if self.failing is not None:
                        timeout = (
                            RETRY_INTERVAL if timeout is None else min(timeout, RETRY_INTERVAL)
                        )
                    if not self._cond.wait(timeout) and self.failing is not None:
                        break  # retry the failing sinks, traffic or not
                batch = list(self._queue)
                self._queue.clear()
                stopping = self._stopping
                if self._queue_full_since is not None:
                    self._queue_ended()
            self._write_batch(batch)
            if stopping:
                with self._cond:
                    if not self._queue:
                        return

    def _queue_ended(self) -> None:
        lost = self.lost[QUEUE_SINK]
        log.warning("audit: %s has room again; %d records lost in all", QUEUE_SINK, lost)
        self._queue_full_since = None
        self._update_failing()

    def _write_batch(self, batch: list[tuple[dict[str, object], Waiter | None]]) -> None:
        bodies = []
        for record, _ in batch:
            try:
                bodies.append(canonical(record))
            except (TypeError, ValueError) as e:
                # A bug in building the record; its absence is still recorded.
                log.error("audit: a record could not be encoded: %s", type(e).__name__)
                bodies.append(
                    canonical(marker("unencodable", request_id=str(record.get("request_id"))))
                )
        durable_ok = True
        for sink in self.sinks:
            health = self.health[id(sink)]
            if not health.opened:
                self._open(sink)
                if not health.opened:
                    self._failed(sink, health.reason or "cannot open", len(bodies))
                    durable_ok &= not sink.durable
                    continue
            ok = self._write(sink, bodies, counted=len(bodies))
            durable_ok &= ok or not sink.durable
        self._update_failing()
        self.written += len(bodies)
        for _, waiter in batch:
            if waiter is not None:
                waiter.set_result(durable_ok)

    def _write(self, sink: Sink, bodies: list[bytes], counted: int) -> bool:
        health = self.health[id(sink)]
        if health.reason is not None:
            bodies = [
                canonical(
                    marker("lost", count=health.lost, since=health.since, reason=health.reason)
                ),
                *bodies,
            ]
        if not bodies:
            return True
        try:
            sink.write(bodies, sync=True)
        except SinkFailed as e:
            self._failed(sink, e.reason, counted)
            return False
        if health.reason is not None:
            log.warning(
                "audit: %s can be written again; %d records were lost since %s",
                sink.name,
                health.lost,
                health.since,
            )
            health.reason, health.lost = None, 0
        return True

    def _failed(self, sink: Sink, reason: str, count: int) -> None:
        health = self.health[id(sink)]
        if health.reason is None:
            health.since = utc_now()
            refuse = self.cfg.on_failure is OnFailure.REFUSE and sink.durable
            how = "new requests are refused" if refuse else "requests go on"
            log.error(
                "audit: %s: %s; its records are being lost and %s (audit.on_failure: %s)",
                sink.name,
                reason,
                how,
                self.cfg.on_failure.value,
            )
        health.reason = reason
        health.lost += count
        self.lost[sink.name] += count

    def _update_failing(self) -> None:
        for sink in self.sinks:
            reason = self.health[id(sink)].reason
            if reason is not None and sink.durable:
                self.failing = reason  # it names the sink
                return
        self.failing = (
            f"{QUEUE_SINK} is full ({self.cfg.queue_size} records)"
            if self._queue_full_since is not None
            else None
        )

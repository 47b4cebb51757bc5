"""Quota counters in Redis, shared by every sidecar that points at it.

Each counter is a hash (``r``, ``t``, ``c``) with a TTL at its window's end.
Check-and-add over all of a request's counters is one Lua script, so it is
atomic against every other sidecar; adjustments touch only counters that still
exist, so a late reconciliation never revives an ended window.

Calls are bounded three ways: at most ``MAX_CONNECTIONS`` run at once (the
rest queue, up to ``MAX_QUEUED`` callers for at most ``QUEUE_WAIT``), each
runs within three ``timeout`` s, and a :class:`Circuit` stops asking a Redis
that failed. A full queue is pressure, not an outage: it refuses that one
request (:class:`StoreBusy`) and changes nothing else, so a burst never moves
counting to per-sidecar counters.

In a Redis Cluster (``cluster: true``) every counter lives in one hash slot:
one admission checks counters of several callers and quotas in one atomic
script, and any two of them can meet in some request, so they cannot be
spread over slots without losing exactness. The key prefix is wrapped in a
hash tag (``{sidegate:}q:...``) unless it already has one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    MaxConnectionsError,
    MovedError,
    RedisError,
    ResponseError,
)
from redis.retry import Retry

from ..config import KeySource
from .backlog import Backlog
from .circuit import Circuit
from .config import RedisConfig, RedisUrl
from .store import Bound, Denial

log = logging.getLogger(__name__)

# The last key names this operation: a retry of a call whose reply was lost
# (timed out after Redis ran it) finds it done and adds nothing twice.
_RESERVE = """
local n = #KEYS - 1
local op = KEYS[n + 1]
if redis.call('EXISTS', op) == 1 then
  return {0, 0, 0}
end
local fields = {'r', 't', 'c'}
for i = 1, n do
  local b = (i - 1) * 7
  local vals = redis.call('HMGET', KEYS[i], 'r', 't', 'c')
  for j = 1, 3 do
    local limit = tonumber(ARGV[b + 1 + j])
    if limit >= 0 then
      local have = tonumber(vals[j] or '0')
      if have + tonumber(ARGV[b + 4 + j]) > limit then
        return {i, j, have}
      end
    end
  end
end
for i = 1, n do
  local b = (i - 1) * 7
  local fresh = redis.call('EXISTS', KEYS[i]) == 0
  for j = 1, 3 do
    local need = tonumber(ARGV[b + 4 + j])
    if need ~= 0 or fresh then
      redis.call('HINCRBY', KEYS[i], fields[j], need)
    end
  end
  if fresh then
    redis.call('PEXPIRE', KEYS[i], ARGV[b + 1])
  end
end
redis.call('SET', op, '1', 'PX', ARGV[n * 7 + 1])
return {0, 0, 0}
"""

_ADJUST = """
local n = #KEYS - 1
if not redis.call('SET', KEYS[n + 1], '1', 'NX', 'PX', ARGV[3]) then
  return 0
end
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 't', ARGV[1])
    redis.call('HINCRBY', KEYS[i], 'c', ARGV[2])
  end
end
return 0
"""


MAX_CONNECTIONS = 16  # per sidecar; Redis itself runs one command at a time
MAX_QUEUED = 2048  # callers waiting for a connection; beyond this, refuse at once
QUEUE_WAIT = 1.0  # seconds a caller may wait for a connection (the policy stage has 5)
OP_TTL_MS = 600_000  # how long an operation's id guards against applying it twice
FAILURES: tuple[type[Exception], ...] = (RedisError, OSError, TimeoutError)


class StoreBusy(Exception):
    """Every connection is in use and the queue for one is full or too slow.

    Load, not an outage: the circuit stays as it is.
    """


class StoreDown(Exception):
    """Redis failed, or the circuit is open and it is not being asked."""

    def __init__(self, message: str, *, opened: bool = False) -> None:
        super().__init__(message)
        self.opened = opened  # this failure began an episode (or extended one): log it


def resolve_url(url: KeySource | RedisUrl) -> str:
    """The Redis URL, read from its env variable or file when it holds a password."""
    if isinstance(url, RedisUrl):
        return url.value
    if url.env:
        value = os.environ.get(url.env, "").strip()
        if not value:
            raise ValueError(f"state.redis.url: environment variable {url.env} is not set")
        return value
    assert url.file is not None
    try:
        value = Path(url.file).read_text().strip()
    except OSError as e:
        raise ValueError(f"state.redis.url: cannot read {url.file}: {e.strerror}") from None
    if not value:
        raise ValueError(f"state.redis.url: {url.file} is empty")
    return value


def slot_prefix(prefix: str) -> str:
    """``prefix`` with a hash tag, so that every key of it maps to one cluster slot."""
    start = prefix.find("{")
    if start >= 0 and prefix.find("}", start + 2) > start:
        return prefix  # already tagged (a non-empty {...}): Redis hashes that part only
    return "{" + prefix + "}"


class RedisStore:
    name = "redis"
    errors: tuple[type[Exception], ...] = FAILURES

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        url = resolve_url(config.url)
        # No client-side retries: a slow or absent Redis must cost one timeout,
        # after which the enforcer falls back; it never stacks up waits.
        common: dict[str, Any] = {
            # Each call as a whole is bounded by ``timeout`` too (see _call).
            "socket_timeout": config.timeout,
            "socket_connect_timeout": config.timeout,
            "health_check_interval": 0,
        }
        if config.cluster:
            from redis.asyncio.cluster import RedisCluster

            self.client: Any = RedisCluster.from_url(
                url, max_connections=MAX_CONNECTIONS, retry=Retry(NoBackoff(), 0), **common
            )
            self._prefix = slot_prefix(config.key_prefix)
        else:
            # Never more callers than connections (the semaphore below), so
            # the pool's own wait is only a backstop.
            pool = redis.BlockingConnectionPool.from_url(
                url,
                max_connections=MAX_CONNECTIONS,
                timeout=QUEUE_WAIT,
                retry=Retry(NoBackoff(), 0),
                **common,
            )
            self.client = redis.Redis(connection_pool=pool)
            self._prefix = config.key_prefix
        self._reserve = self.client.register_script(_RESERVE)
        self._adjust = self.client.register_script(_ADJUST)
        self._slots: asyncio.Semaphore | None = None  # made on first use, in the serving loop
        self._warming: asyncio.Lock | None = None
        self._warm = False
        self._queued = 0
        self.circuit = Circuit()
        self.backlog = Backlog(config.describe())
        self.busy = 0  # calls refused because every connection was taken
        self._tasks: set[asyncio.Task[None]] = set()
        self._drainer: asyncio.Task[None] | None = None
        self._holds = 0  # reservations not yet settled
        self._retired = False
        self.closed = False

    def key(self, suffix: str) -> str:
        return self._prefix + suffix

    # --- bounded calls ----------------------------------------------------------

    async def _call(self, op: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``op`` on a connection of ours, through the circuit."""
        ticket = self.circuit.ticket(time.monotonic())
        if ticket is None:
            raise StoreDown("not asked while the circuit is open")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout
        try:
            if not self._warm:
                await self._warm_up(ticket)
            try:
                result = await self._bounded(op, self.config.timeout)
            except (StoreBusy, ResponseError, TimeoutError, redis.TimeoutError):
                # Load; an answer from Redis; or no answer for the whole timeout.
                raise
            except Exception:
                # Failed fast (a reset, a connection the client left broken after
                # a cancelled call): once more, within the same timeout. Redis may
                # have run it, so from here on it is never given up as "busy" (the
                # caller would go elsewhere while Redis counted it).
                left = max(0.05, deadline - loop.time())
                result = await self._bounded(op, left, patient=True)
        except StoreBusy:
            self.circuit.released(ticket)
            raise
        except Exception as e:
            # Beyond Redis errors, a connection the client left broken after a
            # cancelled call can raise anything: it is a failed call all the same.
            opened = self.circuit.failed(ticket, time.monotonic())
            raise StoreDown(_why(e), opened=opened) from e
        except BaseException:
            self.circuit.released(ticket)
            raise
        if self.circuit.succeeded():
            log.warning("quota state at %s is back", self.config.describe())
        if self.backlog and self._drainer is None and not self.closed:
            self._drainer = self._spawn(self._drain())
        return result

    async def _warm_up(self, ticket: int) -> None:
        """Discover the cluster and load the scripts once, before a burst can race for it.

        A burst on a cold client has every call discover the cluster and load
        the scripts at once; the cluster client then breaks connections
        under calls that time out meanwhile.
        """
        if self._warming is None:
            self._warming = asyncio.Lock()
        async with self._warming:
            if self._warm:
                return
            if not self.circuit.current(ticket):
                # It failed while this call waited its turn: fail now, not one timeout each.
                raise ConnectionError("Redis failed while this call waited to connect")
            if self.config.cluster:
                await asyncio.wait_for(self.client.initialize(), self.config.timeout)
            for script in (_RESERVE, _ADJUST):
                await asyncio.wait_for(self.client.script_load(script), self.config.timeout)
            self._warm = True

    async def _bounded(
        self, op: Callable[[], Awaitable[Any]], limit: float, *, patient: bool = False
    ) -> Any:
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        if self._queued >= MAX_QUEUED and not patient:
            self.busy += 1
            raise StoreBusy(f"{MAX_QUEUED} requests already wait for a connection to Redis")
        if self._slots.locked():
            self._queued += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), limit if patient else QUEUE_WAIT)
            except TimeoutError:
                if patient:
                    raise  # a failure of the call
                self.busy += 1
                raise StoreBusy(
                    f"no connection to Redis became free within {QUEUE_WAIT:g}s"
                ) from None
            finally:
                self._queued -= 1
        else:
            # A free slot: taken at once, without wait_for's task and timer.
            await self._slots.acquire()
        try:
            # The client has its own timeouts; this bounds the call whatever it
            # does (asyncio.timeout: no task of its own, unlike wait_for).
            async with asyncio.timeout(limit):
                return await op()
        except MaxConnectionsError as e:
            if patient:
                raise
            self.busy += 1
            raise StoreBusy("the Redis connection pool is exhausted") from e
        finally:
            self._slots.release()

    # --- the store --------------------------------------------------------------

    async def reserve(self, bounds: Sequence[Bound]) -> Denial | None:
        args: list[int] = []
        for b in bounds:
            args.append(max(1, int(b.ttl * 1000)))
            args.extend(b.limits)
            args.extend(b.need)
        args.append(OP_TTL_MS)
        keys = [self.key(b.key) for b in bounds] + [self.key("op:" + os.urandom(12).hex())]
        got = await self._call(lambda: self._reserve(keys=keys, args=args))
        index, counter, used = (int(x) for x in got)
        return None if index == 0 else Denial(index - 1, counter - 1, used)

    async def adjust(
        self, keys: Sequence[str], tokens: int, micro_usd: int, op: str | None = None
    ) -> None:
        """Add to counters that still exist; ``op`` names the correction (retries pass it again)."""
        full = [self.key(k) for k in keys] + [self.key("op:" + (op or os.urandom(12).hex()))]
        await self._call(lambda: self._adjust(keys=full, args=[tokens, micro_usd, OP_TTL_MS]))

    # --- reconciliation -----------------------------------------------------------

    def hold(self) -> None:
        """A reservation was made here; it will be settled through :meth:`correct`."""
        self._holds += 1

    def correct(self, keys: Sequence[str], tokens: int, micro_usd: int) -> None:
        """Settle one reservation: send its correction now, or later if Redis is away."""
        if tokens or micro_usd:
            self._spawn(self._correct(tuple(keys), tokens, micro_usd))
        else:
            self._release()

    async def _correct(self, keys: tuple[str, ...], tokens: int, micro_usd: int) -> None:
        op = os.urandom(12).hex()
        try:
            await self.adjust(keys, tokens, micro_usd, op)
        except (StoreBusy, StoreDown) as e:
            self.backlog.add(keys, tokens, micro_usd, op)
            if self.closed:
                self.backlog.lose_all("the connection to Redis was closed")
            else:
                log.info("reconciliation of %d tokens queued for later (%s)", tokens, e)
        finally:
            self._release()

    async def _drain(self) -> None:
        try:
            while (c := self.backlog.take()) is not None:
                try:
                    await self.adjust(c.keys, c.tokens, c.micro_usd, c.op)
                except (StoreBusy, StoreDown):
                    self.backlog.put_back(c)
                    return
                self.backlog.retried += 1
        finally:
            self._drainer = None
            self._maybe_close()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _release(self) -> None:
        self._holds -= 1
        self._maybe_close()

    # --- lifetime -------------------------------------------------------------------

    def retire(self) -> None:
        """A reload replaced this store: close it once its last reservation settles."""
        self._retired = True
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self._retired and not self.closed and self._holds <= 0 and self._drainer is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop (a reload outside serving); close() at shutdown does it
            self._spawn(self.close())

    async def close(self) -> None:
        """Send what is still queued if Redis answers, count the rest as lost, disconnect."""
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        others = [t for t in self._tasks if t is not current]
        if others:
            await asyncio.wait(others, timeout=5.0)
        while self.backlog and not self.circuit.is_open:
            c = self.backlog.take()
            assert c is not None
            try:
                await self.adjust(c.keys, c.tokens, c.micro_usd, c.op)
            except (StoreBusy, StoreDown):
                self.backlog.put_back(c)
                break
            self.backlog.retried += 1
        self.backlog.lose_all("the gateway stopped using this Redis before it came back")
        if self.config.cluster:
            await self.client.aclose()
        else:
            # The pool is ours (passed in), so the client would leave its connections open.
            await self.client.aclose(close_connection_pool=True)


def _why(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if isinstance(e, AskError | MovedError | ClusterCrossSlotError) or (
        isinstance(e, ResponseError) and str(e).startswith(("MOVED", "ASK", "CROSSSLOT"))
    ):
        text += " (this Redis is a cluster: set state.redis.cluster: true)"
    return text

"""Quota counters in Redis, shared by every sidecar that points at it.

Each counter is a hash (``r``, ``t``, ``c``) with a TTL at its window's end.
Check-and-add over all of a request's counters is one Lua script, so it is
atomic against every other sidecar; adjustments touch only counters that still
exist, so a late reconciliation never revives an ended window.

In a Redis Cluster, one script's keys must share a slot: give the prefix a
hash tag (``key_prefix: "{sidegate}:"``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from ..config import KeySource
from .config import RedisConfig
from .store import Bound, Denial

_RESERVE = """
local n = #KEYS
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
return {0, 0, 0}
"""

_ADJUST = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 't', ARGV[1])
    redis.call('HINCRBY', KEYS[i], 'c', ARGV[2])
  end
end
return 0
"""


MAX_CONNECTIONS = 16  # per sidecar; Redis itself runs one command at a time


def resolve_url(url: KeySource | str) -> str:
    """The Redis URL, read from its env variable or file when it holds a password."""
    if isinstance(url, str):
        return url
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


class RedisStore:
    name = "redis"
    errors: tuple[type[Exception], ...] = (RedisError,)

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        # No client-side retries: a slow or absent Redis must cost one timeout,
        # after which the enforcer falls back; it never stacks up waits. A
        # burst beyond the pool waits for a free connection (within the same
        # timeout) instead of failing at once, which would trip the fallback.
        pool = redis.BlockingConnectionPool.from_url(
            resolve_url(config.url),
            max_connections=MAX_CONNECTIONS,
            timeout=config.timeout,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self.client: Any = redis.Redis(connection_pool=pool)
        self._reserve = self.client.register_script(_RESERVE)
        self._adjust = self.client.register_script(_ADJUST)

    def key(self, suffix: str) -> str:
        return self.config.key_prefix + suffix

    async def reserve(self, bounds: Sequence[Bound]) -> Denial | None:
        args: list[int] = []
        for b in bounds:
            args.append(max(1, int(b.ttl * 1000)))
            args.extend(b.limits)
            args.extend(b.need)
        got = await self._reserve(keys=[self.key(b.key) for b in bounds], args=args)
        index, counter, used = (int(x) for x in got)
        return None if index == 0 else Denial(index - 1, counter - 1, used)

    async def adjust(self, keys: Sequence[str], tokens: int, micro_usd: int) -> None:
        await self._adjust(keys=[self.key(k) for k in keys], args=[tokens, micro_usd])

    async def close(self) -> None:
        # The pool is ours (passed in), so the client would leave its connections open.
        await self.client.aclose(close_connection_pool=True)

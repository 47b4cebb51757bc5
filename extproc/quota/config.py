"""Config of quotas, caller identity and shared state.

A rate limit and a budget are the same thing here, a *quota*: counters of
requests, tokens and dollars per window, keyed by some of the caller's
dimensions. A per-minute token limit and a monthly dollar budget differ only
in their window and in which counter they bound.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ..config import KeySource, Reader


class Dimension(enum.StrEnum):
    MODEL = "model"
    USER = "user"
    TENANT = "tenant"
    WORKLOAD = "workload"


MONTH = -1.0  # a calendar month (UTC) as a window length
MAX_REDIS_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Quota:
    name: str
    per: tuple[Dimension, ...]
    window: float  # seconds, or MONTH
    models: frozenset[str] = frozenset()  # requested model names; empty = all
    requests: int | None = None
    tokens: int | None = None
    cost_usd: float | None = None

    def applies_to(self, model: str) -> bool:
        return not self.models or model in self.models

    @property
    def counts_tokens(self) -> bool:
        """Tokens or dollars are bounded: the prompt must be counted."""
        return self.tokens is not None or self.cost_usd is not None

    @property
    def window_text(self) -> str:
        if self.window == MONTH:
            return "month"
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if self.window >= size and self.window % size == 0:
                return f"{int(self.window // size)}{unit}"
        return f"{self.window:g}s"


@dataclass(frozen=True, slots=True)
class Identity:
    user_header: str = "x-sidegate-user"
    tenant_header: str = "x-sidegate-tenant"
    tenant: str | None = None
    workload: str | None = None  # None: $SIDEGATE_WORKLOAD, set by the injector


class OnUnavailable(enum.StrEnum):
    LOCAL = "local"  # enforce each sidecar's own in-process counters meanwhile
    CLOSED = "closed"  # refuse requests that a quota applies to
    OPEN = "open"  # admit without quotas


@dataclass(frozen=True, slots=True)
class RedisUrl:
    """A Redis URL written in the config; it may hold a password, so it never prints."""

    value: str = field(repr=False)

    def describe(self) -> str:
        parts = urlsplit(self.value)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"

    def __repr__(self) -> str:
        return f"RedisUrl({self.describe()!r})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: KeySource | RedisUrl
    timeout: float = 1.0  # a call unanswered this long is a failed call
    key_prefix: str = "sidegate:"
    cluster: bool = False  # a Redis Cluster: counters in one hash slot, cluster-aware client

    def describe(self) -> str:
        """Where the state lives, without credentials."""
        if isinstance(self.url, RedisUrl):
            return self.url.describe()
        return f"the URL in {self.url.describe()}"


@dataclass(frozen=True, slots=True)
class StateConfig:
    redis: RedisConfig | None = None
    on_unavailable: OnUnavailable = OnUnavailable.LOCAL


@dataclass(frozen=True, slots=True)
class QuotaConfig:
    quotas: tuple[Quota, ...] = ()
    identity: Identity = field(default_factory=Identity)
    state: StateConfig = field(default_factory=StateConfig)
    tokenizer_dir: str | None = None

    @property
    def counts_tokens(self) -> bool:
        return any(q.counts_tokens for q in self.quotas)


# --- parsing -------------------------------------------------------------------

_HEADER = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_QUOTA_FIELDS = ["name", "per", "models", "window", "requests", "tokens", "cost_usd"]


def _window(r: Reader) -> float:
    if r.value == "month":
        return MONTH
    if r.value is None:
        raise r.fail("required: a duration such as 1m, 1h, 24h, or 'month'")
    try:
        seconds = r.duration(0.0)
    except ValueError:  # ConfigError; the generic duration message does not know 'month'
        msg = f"expected a duration such as 1m, 1h or 24h, or 'month', got {r.value!r}"
        raise r.fail(msg) from None
    if seconds < 1 or seconds != int(seconds):
        raise r.fail(f"expected whole seconds of at least 1s, or 'month', got {r.value!r}")
    return seconds


def _quota(r: Reader, models: Mapping[str, object], seen: set[str]) -> Quota:
    r.mapping(_QUOTA_FIELDS)
    name_r = r.child("name")
    name = name_r.string()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?", name):
        raise name_r.fail("quota names are lowercase letters, digits, '.', '_' and '-' (max 63)")
    if name in seen:
        raise name_r.fail(f"duplicate quota name {name!r}")
    seen.add(name)

    per: list[Dimension] = []
    for d_r in r.child("per").elements():
        try:
            d = Dimension(d_r.string())
        except ValueError:
            raise d_r.fail(
                f"unknown dimension {d_r.value!r}; expected one of: "
                + ", ".join(d.value for d in Dimension)
            ) from None
        if d in per:
            raise d_r.fail(f"dimension {d.value!r} listed twice")
        per.append(d)

    names: list[str] = []
    for n_r in r.child("models").elements():
        n = n_r.string()
        if n not in models:
            raise n_r.fail(f"unknown model or route {n!r}")
        names.append(n)

    def present(key: str) -> bool:
        return r.child(key).value is not None

    requests = r.child("requests").integer(0, minimum=1) if present("requests") else None
    tokens = r.child("tokens").integer(0, minimum=1) if present("tokens") else None
    cost = r.child("cost_usd").number(0.0, minimum=0.000001) if present("cost_usd") else None
    if requests is None and tokens is None and cost is None:
        raise r.fail("a quota bounds at least one of: requests, tokens, cost_usd")
    return Quota(
        name=name,
        per=tuple(per),
        window=_window(r.child("window")),
        models=frozenset(names),
        requests=requests,
        tokens=tokens,
        cost_usd=cost,
    )


def _header_name(r: Reader, default: str) -> str:
    value = r.string(default).lower()
    if not _HEADER.match(value) or value.startswith(":"):
        raise r.fail(f"not an HTTP header name: {r.value!r}")
    return value


def _redis(r: Reader, parse_key: Callable[[Reader], KeySource]) -> RedisConfig:
    r.mapping(["url", "timeout", "key_prefix", "cluster"])
    url_r = r.child("url")
    url: KeySource | RedisUrl
    cluster = r.child("cluster").boolean(False)
    if isinstance(url_r.value, str):
        text = url_r.string()
        scheme = urlsplit(text).scheme
        if scheme not in ("redis", "rediss", "unix"):
            # Never echo the URL: it may hold a password.
            raise url_r.fail(
                f"expected a redis://, rediss:// or unix:// URL, got scheme {scheme!r}"
            )
        if cluster and scheme == "unix":
            raise r.child("cluster").fail("a Redis Cluster is reached over redis:// or rediss://")
        url = RedisUrl(text)
    elif url_r.value is None:
        raise url_r.fail("required: a redis:// URL, or {env: NAME} / {file: PATH} holding one")
    else:
        url = parse_key(url_r)
    timeout = r.child("timeout").duration(1.0)
    if timeout > MAX_REDIS_TIMEOUT:
        # A call (its retry included) plus the wait for a connection must fit
        # in the policy stage's 5 s; a Redis slower than this is better treated as away.
        raise r.child("timeout").fail(
            f"at most {MAX_REDIS_TIMEOUT:g}s, got {r.child('timeout').value!r}"
        )
    return RedisConfig(
        url=url,
        timeout=timeout,
        key_prefix=r.child("key_prefix").string("sidegate:"),
        cluster=cluster,
    )


def parse_quota_config(
    root: Reader,
    models: Sequence[str] | Mapping[str, object],
    parse_key: Callable[[Reader], KeySource],
) -> QuotaConfig:
    known = {m: None for m in models}
    seen: set[str] = set()
    quotas = tuple(_quota(q_r, known, seen) for q_r in root.child("quotas").elements())

    i_r = root.child("identity")
    i_r.mapping(["user_header", "tenant_header", "tenant", "workload"], optional=True)
    identity = Identity(
        user_header=_header_name(i_r.child("user_header"), "x-sidegate-user"),
        tenant_header=_header_name(i_r.child("tenant_header"), "x-sidegate-tenant"),
        tenant=i_r.child("tenant").opt_string(),
        workload=i_r.child("workload").opt_string(),
    )

    s_r = root.child("state")
    s_r.mapping(["redis", "on_unavailable"], optional=True)
    redis = _redis(s_r.child("redis"), parse_key) if s_r.child("redis").value is not None else None
    ou_r = s_r.child("on_unavailable")
    try:
        on_unavailable = OnUnavailable(ou_r.string("local"))
    except ValueError:
        raise ou_r.fail("expected one of: " + ", ".join(o.value for o in OnUnavailable)) from None

    t_r = root.child("tokenizer")
    t_r.mapping(["dir"], optional=True)
    return QuotaConfig(
        quotas=quotas,
        identity=identity,
        state=StateConfig(redis=redis, on_unavailable=on_unavailable),
        tokenizer_dir=t_r.child("dir").opt_string(),
    )

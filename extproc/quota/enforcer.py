"""Quota admission before a request leaves, and reconciliation when it completes.

Admission estimates the prompt's tokens (``estimate``: text with tiktoken,
media from their size) and adds the most output the request allows (its
``max_tokens``, or ``defaults.reserve_output_tokens`` when it sets none),
prices both at the dearest candidate of the route, and reserves one request
plus those tokens and dollars in every quota that applies, atomically. When
the response completes, the reservation is corrected to the real usage, so a
window is overrun only by what in-flight requests use beyond their
reservation: output past the default for requests that set no limit, and
input the estimate missed (media given by URL or file id beyond their stated
maximum).

When Redis fails, ``state.on_unavailable`` decides: enforce local counters,
refuse, or admit; the store's circuit stops asking it for a while (one step
of back-off per failure episode). When every connection to Redis is busy,
the request is refused with a 503 (load, not an outage: nothing falls back).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .. import tokenizer
from ..apis import ClientApi
from ..config import Model, Route
from ..errors import GatewayError
from ..estimate import output_tokens, prompt_tokens
from ..state import RequestState
from ..usage import Usage
from . import windows
from .caller import Caller
from .config import Dimension, OnUnavailable, Quota, QuotaConfig
from .store import UNBOUNDED, Bound, Denial, MemoryStore, Store

if TYPE_CHECKING:
    from .redis_store import RedisStore

log = logging.getLogger(__name__)

GRACE = 300.0  # a counter outlives its window so late reconciliations still land
LARGE_BODY = 64 * 1024  # prompts beyond this are counted off the event loop
CACHED_TEXT = 4096  # characters; longer strings are counted afresh each time


@dataclass(frozen=True, slots=True)
class Reservation:
    store: Store
    keys: tuple[str, ...]
    tokens: int  # input estimate plus output reserved
    micro_usd: int
    quotas: tuple[str, ...] = ()  # the names of the quotas it counts in, as ``keys``


@dataclass(slots=True)
class QuotaRefused(GatewayError):
    """A 429 from a quota: which one, so the request's record can say."""

    quota: str = ""
    counter: str = ""  # "requests", "tokens" or "cost_usd"


def usage_micro_usd(model: Model, usage: Usage) -> int:
    """What ``usage`` of ``model`` costs, in micro-dollars (quotas and the request record)."""
    return _micro_usd(usage.input_tokens, model.price.input_per_mtok) + _micro_usd(
        usage.output_tokens, model.price.output_per_mtok
    )


@dataclass(frozen=True, slots=True)
class _RouteInfo:
    quotas: tuple[Quota, ...]
    count: Callable[[str], int] | None  # None when no quota of the route counts tokens
    input_price: float  # USD per million tokens, the dearest candidate's
    output_price: float
    context_window: int | None  # the largest candidate's, when every candidate's is known


def _micro_usd(tokens: float, price_per_mtok: float) -> int:
    # USD per million tokens times tokens is exactly micro-dollars.
    return math.ceil(tokens * price_per_mtok)


def _money(micro: int) -> str:
    return f"${micro / 1_000_000:,.2f}"


class QuotaEnforcer:
    def __init__(
        self,
        config: QuotaConfig,
        models: Mapping[str, Model],
        routes: Mapping[str, Route],
        *,
        local: MemoryStore,
        remote: RedisStore | None,
        output_default: int = 4096,
    ) -> None:
        self.config = config
        self.models = models
        self.local = local
        self.remote = remote
        self.output_default = output_default
        self._routes: dict[str, _RouteInfo] = {}
        for name, route in routes.items():
            quotas = tuple(q for q in config.quotas if q.applies_to(name))
            if not quotas:
                continue
            candidates = [models[c.model] for g in route.groups for c in g]
            count = None
            if any(q.counts_tokens for q in quotas):
                enc = tokenizer.load(
                    tokenizer.encoding_for_model(candidates[0].id), config.tokenizer_dir
                )
                count = _counter(enc)
            self._routes[name] = _RouteInfo(
                quotas=quotas,
                count=count,
                input_price=max(m.price.input_per_mtok for m in candidates),
                output_price=max(m.price.output_per_mtok for m in candidates),
                context_window=None
                if any(m.context_window is None for m in candidates)
                else max(m.context_window or 0 for m in candidates),
            )

    def applies(self, route: str) -> bool:
        return route in self._routes

    def suspends(self, body_size: int) -> bool:
        """Admission may wait (on Redis, or on a thread counting a huge prompt)."""
        return self.remote is not None or body_size > LARGE_BODY

    # --- admission --------------------------------------------------------------

    async def admit(
        self, caller: Caller, route: str, api: ClientApi, body: dict[str, Any], size: int
    ) -> Reservation | None:
        """Reserve the request in every quota of ``route`` (``size``: body bytes)."""
        info = self._routes.get(route)
        if info is None:
            return None
        tokens = 0
        if info.count is not None:
            if size > LARGE_BODY:
                # tiktoken releases the GIL: other requests go on meanwhile.
                tokens = await asyncio.to_thread(prompt_tokens, api, body, info.count)
            else:
                tokens = prompt_tokens(api, body, info.count)
            out = output_tokens(api, body, self.output_default)
            if info.context_window is not None:
                out = max(0, min(out, info.context_window - tokens))
            micro = _micro_usd(tokens, info.input_price) + _micro_usd(out, info.output_price)
            tokens += out
        else:
            micro = 0
        now = time.time()
        bounds: list[Bound] = []
        ends: list[float] = []
        for q in info.quotas:
            index, end = windows.current(q.window, now)
            ends.append(end)
            bounds.append(
                Bound(
                    key=_key(q, index, caller, route),
                    ttl=end - now + GRACE,
                    limits=(
                        UNBOUNDED if q.requests is None else q.requests,
                        UNBOUNDED if q.tokens is None else q.tokens,
                        UNBOUNDED if q.cost_usd is None else round(q.cost_usd * 1_000_000),
                    ),
                    need=(1, tokens, micro),
                )
            )
        store, denial = await self._reserve(bounds)
        if denial is not None:
            i = denial.index
            raise _denied(info.quotas[i], bounds[i], denial, caller, ends[i] - now, route)
        if store is None:
            return None
        if self.remote is not None and store is self.remote:
            self.remote.hold()  # a retired store stays open until this is settled
        return Reservation(
            store, tuple(b.key for b in bounds), tokens, micro, tuple(q.name for q in info.quotas)
        )

    async def _reserve(self, bounds: list[Bound]) -> tuple[Store | None, Denial | None]:
        from .redis_store import StoreBusy, StoreDown

        remote = self.remote
        if remote is not None:
            try:
                return remote, await remote.reserve(bounds)
            except StoreBusy as e:
                raise GatewayError(
                    503,
                    f"quota state is busy ({e}); try again shortly",
                    code="quota_state_busy",
                    retry_after=1,
                ) from None
            except StoreDown as e:
                if e.opened:
                    self._log_outage(e, remote)
        mode = self.config.state.on_unavailable
        if remote is None or mode is OnUnavailable.LOCAL:
            return self.local, self.local.reserve_now(bounds)
        if mode is OnUnavailable.OPEN:
            return None, None
        raise GatewayError(
            503,
            "quota state is unavailable and this gateway is configured to refuse "
            "requests under quota until it is back (state.on_unavailable: closed)",
            code="quota_state_unavailable",
            retry_after=math.ceil(max(1.0, remote.circuit.open_until - time.monotonic())),
        )

    def _log_outage(self, error: Exception, remote: RedisStore) -> None:
        log.warning(
            "quota state at %s failed (%s); %s; asking again in %.0fs",
            remote.config.describe(),
            error,
            {
                OnUnavailable.LOCAL: "enforcing local counters",
                OnUnavailable.OPEN: "admitting without quotas",
                OnUnavailable.CLOSED: "refusing requests under quota",
            }[self.config.state.on_unavailable],
            remote.circuit.pause,
        )

    # --- reconciliation ---------------------------------------------------------

    def settle(self, state: RequestState) -> None:
        """Correct the reservation of a completed request by its real usage."""
        r = state.reservation
        if not isinstance(r, Reservation):
            return
        usage = state.usage
        if usage is None:
            if state.status is not None and 200 <= state.status < 300:
                # Served, usage unknown: the estimate (output reserved included) stands.
                tokens, micro = r.tokens, r.micro_usd
            else:
                tokens = micro = 0  # nothing was served: give the tokens back
        else:
            tokens = usage.total_tokens
            model = self.models.get(state.model or "")
            micro = usage_micro_usd(model, usage) if model is not None else r.micro_usd
        self._correct(r, tokens - r.tokens, micro - r.micro_usd)

    def abandoned(self, admission: asyncio.Task[Reservation | None]) -> None:
        """The caller left while ``admission`` ran: give back what it reserves, if anything."""

        def done(task: asyncio.Task[Reservation | None]) -> None:
            r = None if task.cancelled() or task.exception() else task.result()
            if r is not None:
                self._correct(r, -r.tokens, -r.micro_usd)

        admission.add_done_callback(done)

    def _correct(self, r: Reservation, d_tokens: int, d_micro: int) -> None:
        if isinstance(r.store, MemoryStore):
            if d_tokens or d_micro:
                r.store.adjust_now(r.keys, d_tokens, d_micro)
            return
        # A remote store sends it now or keeps it until it is back, and counts
        # what it could never send.
        remote_store(r.store).correct(r.keys, d_tokens, d_micro)

    @property
    def reconciliations(self) -> dict[str, int]:
        """Reconciliations retried after an outage and lost to one (for metrics and tests)."""
        if self.remote is None:
            return {"queued": 0, "retried": 0, "lost": 0, "lost_tokens": 0}
        b = self.remote.backlog
        return {
            "queued": len(b),
            "retried": b.retried,
            "lost": b.lost,
            "lost_tokens": b.lost_tokens,
        }


def remote_store(store: object) -> RedisStore:
    from .redis_store import RedisStore

    assert isinstance(store, RedisStore)
    return store


def _counter(enc: Any) -> Callable[[str], int]:
    # Chat clients resend the whole conversation, system prompt and tools every
    # turn: most strings have been counted before. Only short ones are kept,
    # so the cache stays under a few MiB.
    @functools.lru_cache(maxsize=1024)
    def cached(text: str) -> int:
        return len(enc.encode_ordinary(text))

    def count(text: str) -> int:
        # encode_ordinary: text that spells a special token is counted as text.
        if len(text) <= CACHED_TEXT:
            return cached(text)
        return len(enc.encode_ordinary(text))

    return count


def _dims(caller: Caller, route: str) -> dict[Dimension, str]:
    return {
        Dimension.MODEL: route,
        Dimension.USER: caller.user,
        Dimension.TENANT: caller.tenant,
        Dimension.WORKLOAD: caller.workload,
    }


def _key(q: Quota, index: int, caller: Caller, route: str) -> str:
    dims = _dims(caller, route)
    who = ",".join(f"{d.value}={quote(dims[d], safe='')}" for d in q.per)
    return f"q:{q.name}:{q.window_text}:{index}:{who}"


def _who(q: Quota, caller: Caller, route: str) -> str:
    dims = _dims(caller, route)
    return " for " + ", ".join(f"{d.value} {dims[d]}" for d in q.per) if q.per else ""


def _denied(
    q: Quota, bound: Bound, denial: Denial, caller: Caller, wait: float, route: str
) -> GatewayError:
    c = denial.counter
    limit, need, used = bound.limits[c], bound.need[c], denial.used
    if c == 0:
        limit_s, used_s, need_s = f"{limit} requests", f"{used}", ""
    elif c == 1:
        limit_s, used_s, need_s = f"{limit} tokens", f"{used}", f"about {need} tokens"
    else:
        limit_s, used_s, need_s = _money(limit), _money(used), f"about {_money(need)}"
    head = f"Quota {q.name!r}{_who(q, caller, route)} allows {limit_s} per {q.window_text}"
    counter = ("requests", "tokens", "cost_usd")[c]
    if need > limit:
        # Waiting would not help: say so, and send no Retry-After.
        return QuotaRefused(
            429,
            f"{head}; this request alone needs {need_s}, more than a whole window allows",
            code="rate_limit_exceeded",
            quota=q.name,
            counter=counter,
        )
    seconds = max(1, math.ceil(wait))
    needs = f", this request needs {need_s}" if need_s else ""
    return QuotaRefused(
        429,
        f"{head}; {used_s} used{needs}. Try again in {seconds}s.",
        code="rate_limit_exceeded",
        retry_after=seconds,
        quota=q.name,
        counter=counter,
    )

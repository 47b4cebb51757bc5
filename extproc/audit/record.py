"""The audit record of one request: what it carries, built from the request's record.

One JSON object per request (``kind: request``, schema version ``v: 1``)::

    time, start, duration_ms        when it ended and began (UTC), how long it took
    request_id, trace_id, span_id   the request's ids; the trace is the app's, continued
    caller {user, tenant, workload}
    client {api, path, stream}      the API the app spoke and the path it called
    model {requested, route}        what the app asked for; the route that served it
    attempts [{provider, region, model, model_id, status, error, latency_ms, retry_after}]
    answer {provider, model, model_id, response_model, response_id, finish_reasons}
    usage {input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
           reasoning_tokens}
    cost_usd                        at the config's prices
    quota {counted_in [names], refused_by}
    outcome {status, error, by}     the status the app got; what went wrong; who
                                    answered: "provider" or "sidegate" (a refusal)
    content {request, response, ...}   only on routes in audit.content.routes
    redactions {type: count}        what a redaction step removed (never the values)

Fields are picked one by one from what the stages recorded; no header is ever
copied, so no key can ride along. Recorded content is what the app sent and
what it got back (provider keys were scrubbed from the response already); it
is scrubbed of every key once more here.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..quota.enforcer import Reservation, usage_micro_usd
from ..scrub import Scrubber
from .chain import VERSION

if TYPE_CHECKING:
    from ..config import GatewayConfig
    from ..state import Attempt, RequestState


# The most of any one string the client or a provider chose (a model name, an
# id) that a record keeps: a record's size must not be the client's to pick.
MAX_TEXT = 256


def _clip(value: str | None) -> str | None:
    return value if value is None or len(value) <= MAX_TEXT else value[:MAX_TEXT] + "…"


def _iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ms(start: float, end: float | None) -> float | None:
    return None if end is None else round((end - start) * 1000, 3)


def _attempt(a: Attempt) -> dict[str, Any]:
    return {
        "provider": a.provider,
        "region": a.region,
        "model": a.model,
        "model_id": a.model_id,
        "status": a.status,
        "error": a.error,
        "latency_ms": _ms(a.started, a.ended),
        "retry_after": _clip(a.retry_after),
    }


def _trace_id(state: RequestState) -> str | None:
    if state.trace_id:
        return f"{state.trace_id:032x}"
    # Not traced by sidegate: the app's own trace still ties the record to it.
    parts = (state.traceparent or "").split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        try:
            int(parts[1], 16)
        except ValueError:
            return None
        return parts[1].lower()
    return None


def _cut(text: str, limit: int) -> tuple[str, bool]:
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", "ignore"), True


def _content(state: RequestState, limit: int, keys: Iterable[str]) -> dict[str, Any]:
    scrub = Scrubber(keys)
    request, request_cut = _cut(state.raw, limit)
    out: dict[str, Any] = {
        "request": scrub.scrub(request.encode("utf-8", "surrogatepass")).decode("utf-8", "replace"),
        "request_bytes": len(state.raw.encode("utf-8", "surrogatepass")),
        "request_truncated": request_cut,
    }
    body = state.response_content
    if body is not None:
        out["response"] = scrub.scrub(bytes(body)).decode("utf-8", "replace")
        out["response_bytes"] = state.response_bytes
        out["response_truncated"] = state.response_bytes > len(body)
    return out


def _redactions(state: RequestState) -> dict[str, int] | None:
    found = getattr(state, "redactions", None)
    if not isinstance(found, Mapping) or not found:
        return None
    # Types and counts only: a redaction step's summary, never what it removed.
    return {str(k)[:64]: int(v) for k, v in list(found.items())[:64] if isinstance(v, int)}


def build(
    state: RequestState,
    config: GatewayConfig,
    keys: Callable[[], Iterable[str]],
    now: float | None = None,
) -> dict[str, Any]:
    """The audit record of ``state``, a request that has ended (or is ending).

    ``keys``: every provider key sidegate holds, read only when content is recorded.
    """
    end = state.ended if state.ended is not None else (now or time.monotonic())
    caller = state.caller
    plan = state.plan
    route = plan.route if plan is not None else None
    model = config.models.get(state.model or "") if state.model else None
    usage = state.usage
    reservation = state.reservation
    answered = state.answered
    record: dict[str, Any] = {
        "v": VERSION,
        "kind": "request",
        "time": _iso(state.wall(end)),
        "start": _iso(state.started_wall),
        "duration_ms": _ms(state.started, end),
        "request_id": _clip(state.id),
        "trace_id": _trace_id(state),
        "span_id": f"{state.span_id:016x}" if state.span_id else None,
        "caller": None
        if caller is None
        else {"user": caller.user, "tenant": caller.tenant, "workload": caller.workload},
        "client": {
            "api": state.api.value if state.api is not None else None,
            "path": state.path,
            "stream": state.stream,
        },
        "model": {"requested": _clip(state.requested_model), "route": route},
        "attempts": [_attempt(a) for a in state.attempts],
        "answer": None
        if state.provider is None
        else {
            "provider": state.provider,
            "model": state.model,
            "model_id": model.id if model is not None else None,
            "response_model": _clip(state.response_model),
            "response_id": _clip(state.response_id),
            "finish_reasons": [_clip(r) for r in state.finish_reasons],
        },
        "usage": None
        if usage is None
        else {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_tokens": usage.cache_read_tokens,
            "cache_creation_tokens": usage.cache_creation_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
        },
        "cost_usd": None
        if usage is None or model is None
        else usage_micro_usd(model, usage) / 1_000_000,
        "quota": {
            "counted_in": list(reservation.quotas) if isinstance(reservation, Reservation) else [],
            "refused_by": answered.quota if answered is not None else None,
        },
        "outcome": {
            "status": state.final_status,
            "error": state.error_type,
            "by": "sidegate" if answered is not None else "provider",
        },
    }
    # A refused request's prompt is recorded too, on the route it asked for.
    asked = route or (state.requested_model if state.requested_model in config.routes else None)
    if asked is not None and config.audit.records_content(asked):
        record["content"] = _content(state, config.audit.content.max_bytes, keys())
    redactions = _redactions(state)
    if redactions is not None:
        record["redactions"] = redactions
    return record

"""A request record as OpenTelemetry attributes: the GenAI conventions' and sidegate's own.

Shared by spans (every detail of one request) and metrics (a few bounded
dimensions). Values a client chose are cut short: a model name a client made
up never grows a span, and never becomes a metric series (``metric_route``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..apis import ClientApi
from ..config import GatewayConfig, Provider, ProviderApi
from ..quota.enforcer import Reservation, usage_micro_usd
from ..state import Attempt, RequestState

MAX_VALUE = 128  # characters of a client's value (a model name) kept in a span
OTHER = "_other"  # the metric route of a request for a model sidegate does not serve

# Request parameters: the body's field → the GenAI attribute (both APIs name them alike).
_PARAMS = {
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count",
}


def operation(api: ClientApi | None) -> str:
    return "embeddings" if api is ClientApi.OPENAI_EMBEDDINGS else "chat"


def provider_name(provider: Provider | None) -> str | None:
    """``gen_ai.provider.name``: what the provider's API is (the conventions' values)."""
    if provider is None:
        return None
    return "anthropic" if provider.api is ProviderApi.ANTHROPIC else "openai"


def metric_route(state: RequestState, config: GatewayConfig) -> str:
    """The route as a metric dimension: only names the config defines."""
    if state.plan is not None:
        return state.plan.route
    return state.requested_model if state.requested_model in config.routes else OTHER


def cost_usd(state: RequestState, config: GatewayConfig) -> float | None:
    """What the answer cost at the config's prices (None: no usage reported)."""
    model = config.models.get(state.model or "")
    if state.usage is None or model is None:
        return None
    return usage_micro_usd(model, state.usage) / 1_000_000


def request_params(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, name in _PARAMS.items():
        value = body.get(field)
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float) and name not in out:
            out[name] = value
    stop = body.get("stop", body.get("stop_sequences"))
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list):
        seqs = [s[:MAX_VALUE] for s in stop[:8] if isinstance(s, str)]
        if seqs:
            out["gen_ai.request.stop_sequences"] = seqs
    fmt = body.get("encoding_format")
    if isinstance(fmt, str):
        out["gen_ai.request.encoding_formats"] = [fmt[:MAX_VALUE]]
    return out


def request_span(state: RequestState, config: GatewayConfig, cache_write: str) -> dict[str, Any]:
    """The attributes of a request's span (``cache_write``: the convention's name in use)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation(state.api),
        "sidegate.request_id": state.id[:MAX_VALUE],
        "sidegate.stream": state.stream,
    }
    if state.requested_model:
        attrs["gen_ai.request.model"] = state.requested_model[:MAX_VALUE]
    if state.api is not None:
        attrs["sidegate.api"] = state.api.value
    if state.path:
        attrs["url.path"] = state.path
    if state.plan is not None:
        attrs["sidegate.route"] = state.plan.route
    provider = config.providers.get(state.provider or "")
    if provider is not None:
        attrs["gen_ai.provider.name"] = provider_name(provider)
        attrs["server.address"] = provider.host
        attrs["server.port"] = provider.port
        attrs["sidegate.provider"] = provider.name
    if state.model:
        attrs["sidegate.model"] = state.model
    if state.response_model:
        attrs["gen_ai.response.model"] = state.response_model
    if state.response_id:
        attrs["gen_ai.response.id"] = state.response_id
    if state.finish_reasons:
        attrs["gen_ai.response.finish_reasons"] = list(state.finish_reasons)
    usage = state.usage
    if usage is not None:
        attrs["gen_ai.usage.input_tokens"] = usage.input_tokens
        attrs["gen_ai.usage.output_tokens"] = usage.output_tokens
        if usage.cache_read_tokens:
            attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
        if usage.cache_creation_tokens:
            attrs[cache_write] = usage.cache_creation_tokens
        if usage.reasoning_tokens:
            attrs["sidegate.usage.reasoning_tokens"] = usage.reasoning_tokens
    cost = cost_usd(state, config)
    if cost is not None:
        attrs["sidegate.cost_usd"] = cost
    status = state.final_status
    if status is not None:
        attrs["http.response.status_code"] = status
    error = state.error_type
    if error is not None:
        attrs["error.type"] = error
    attrs["sidegate.attempts"] = len(state.attempts)
    if state.first_token is not None:
        attrs["sidegate.time_to_first_chunk"] = state.first_token - state.started
    caller = state.caller
    if caller is not None:
        attrs["sidegate.caller.user"] = caller.user
        attrs["sidegate.caller.tenant"] = caller.tenant
        attrs["sidegate.caller.workload"] = caller.workload
    r = state.reservation
    if isinstance(r, Reservation):
        attrs["sidegate.quota.reserved"] = list(r.quotas)
        attrs["sidegate.quota.reserved_tokens"] = r.tokens
        attrs["sidegate.quota.reserved_usd"] = r.micro_usd / 1_000_000
    answered = state.answered
    if answered is not None and answered.quota:
        attrs["sidegate.quota.refused"] = answered.quota
    if answered is not None and answered.retry_after is not None:
        attrs["sidegate.retry_after"] = answered.retry_after
    attrs.update(request_params(state.body))
    return attrs


def attempt_span(
    state: RequestState, index: int, attempt: Attempt, config: GatewayConfig
) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "http.request.method": "POST",
        "sidegate.attempt": index + 1,
        "sidegate.provider": attempt.provider,
        "sidegate.model": attempt.model,
        "gen_ai.request.model": attempt.model_id,
    }
    provider = config.providers.get(attempt.provider)
    if provider is not None:
        attrs["gen_ai.provider.name"] = provider_name(provider)
        attrs["server.address"] = provider.host
        attrs["server.port"] = provider.port
    if attempt.region:
        attrs["sidegate.region"] = attempt.region
    if attempt.status is not None:
        attrs["http.response.status_code"] = attempt.status
    if attempt.failed:
        attrs["error.type"] = attempt.outcome
    if index > 0:
        # Why this attempt happened: how the one before it ended.
        before = state.attempts[index - 1]
        attrs["http.request.resend_count"] = index
        attrs["sidegate.retry.reason"] = before.outcome
        if before.retry_after:
            attrs["sidegate.retry.after"] = before.retry_after[:MAX_VALUE]
        attrs["sidegate.failover"] = before.provider != attempt.provider
    return attrs

"""Which providers may answer which request: the plan both Envoy and the stages follow.

A route (``smart``) asked for through one client API keeps only the candidates
that API can reach (embeddings only from embedding models; chat and Messages
from any provider a ``translate`` pair can reach). Each surviving (route, API) pair becomes one
Envoy route with its own priority groups, so "this provider cannot serve this
request" is settled before the router, where Envoy can still fail over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .apis import ClientApi, route_key
from .config import Candidate, GatewayConfig, Model, Provider
from .translate import can_serve


@dataclass(frozen=True, slots=True)
class RoutePlan:
    key: str  # the routing header value
    route: str
    api: ClientApi
    groups: tuple[tuple[Candidate, ...], ...]
    retries: int


def _usable(model: Model, provider: Provider, api: ClientApi) -> bool:
    if model.embeddings != (api is ClientApi.OPENAI_EMBEDDINGS):
        return False
    return can_serve(api, provider.api)


def plan_routes(config: GatewayConfig) -> dict[str, RoutePlan]:
    plans: dict[str, RoutePlan] = {}
    for route in config.routes.values():
        for api in ClientApi:
            groups = tuple(
                g
                for g in (
                    tuple(
                        c
                        for c in group
                        if _usable(
                            config.models[c.model],
                            config.providers[config.models[c.model].provider],
                            api,
                        )
                    )
                    for group in route.groups
                )
                if g
            )
            if groups:
                key = route_key(route.name, api)
                plans[key] = RoutePlan(key, route.name, api, groups, route.retries)
    return plans


def model_for_attempt(
    plan: RoutePlan, models: Mapping[str, Model], provider: str, attempt: int
) -> Model | None:
    """The model an attempt stands for: Envoy sends attempt N to group N-1, wrapping around."""
    group = plan.groups[(max(attempt, 1) - 1) % len(plan.groups)]
    for c in group:
        if models[c.model].provider == provider:
            return models[c.model]
    # Envoy picked a cluster outside the expected group (should not happen):
    # any candidate of this provider is still a correct answer.
    for g in plan.groups:
        for c in g:
            if models[c.model].provider == provider:
                return models[c.model]
    return None

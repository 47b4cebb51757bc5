"""Which providers may answer which request: the plan both Envoy and the stages follow.

A route (``smart``) asked for through one client API keeps only the candidates
that API can reach (embeddings only from embedding models; chat and Messages
from any provider a ``translate`` pair can reach). Each surviving (route, API) pair becomes one
Envoy route with its own priority groups, so "this provider cannot serve this
request" is settled before the router, where Envoy can still fail over.

Some requests only some candidates can take (``n: 2`` or ``logprobs`` has no
Anthropic translation). A plan whose candidates differ in what they can
translate (their ``Capability``: provider API and structured-output way) has
one narrowed variant per subset of those capabilities, each an Envoy route of
its own made of the candidates with those capabilities only. The route step
checks the request against each capability of the plan (at most three) and
picks the variant of the ones that can serve it: the request falls through to
a group that can serve it rather than being refused by the first.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .apis import ClientApi, route_key
from .config import Candidate, GatewayConfig, Model, Provider, ProviderApi, StructuredOutputs
from .translate import can_refuse, can_serve

# What decides whether a candidate can translate a request: two candidates
# with the same capability accept and refuse the same requests.
Capability = tuple[ProviderApi, StructuredOutputs]


@dataclass(frozen=True, slots=True)
class RoutePlan:
    key: str  # the routing header value
    route: str
    api: ClientApi
    groups: tuple[tuple[Candidate, ...], ...]
    retries: int
    # The capabilities of the candidates, in the order of the groups.
    capabilities: tuple[Capability, ...] = ()
    # The variant made of the candidates of each proper subset of those
    # capabilities: (subset, its plan's key). Empty for a plan of one capability.
    narrowed: tuple[tuple[frozenset[Capability], str], ...] = ()

    def narrowed_to(self, servable: frozenset[Capability]) -> str:
        """The key of the variant made of the candidates with these capabilities."""
        return dict(self.narrowed)[servable]


def _usable(model: Model, provider: Provider, api: ClientApi) -> bool:
    if model.embeddings != (api is ClientApi.OPENAI_EMBEDDINGS):
        return False
    return can_serve(api, provider.api)


def _usable_candidate(config: GatewayConfig, api: ClientApi, c: Candidate) -> bool:
    model = config.models[c.model]
    return _usable(model, config.providers[model.provider], api)


def _has_capability(config: GatewayConfig, keep: frozenset[Capability], c: Candidate) -> bool:
    return capability(config, c) in keep


def capability(config: GatewayConfig, candidate: Candidate) -> Capability:
    model = config.models[candidate.model]
    return (config.providers[model.provider].api, model.structured_outputs)


def _keep(
    groups: tuple[tuple[Candidate, ...], ...], keep: Callable[[Candidate], bool]
) -> tuple[tuple[Candidate, ...], ...]:
    kept = (tuple(c for c in g if keep(c)) for g in groups)
    return tuple(g for g in kept if g)


def plan_routes(config: GatewayConfig) -> dict[str, RoutePlan]:
    plans: dict[str, RoutePlan] = {}
    for route in config.routes.values():
        for api in ClientApi:
            groups = _keep(route.groups, functools.partial(_usable_candidate, config, api))
            if not groups:
                continue
            key = route_key(route.name, api)
            caps = tuple(dict.fromkeys(capability(config, c) for g in groups for c in g))
            if not any(can_refuse(api, provider_api) for provider_api, _ in caps):
                # Every candidate serves whatever any of them does: no variants.
                caps = ()
            narrowed: list[tuple[frozenset[Capability], str]] = []
            for size in range(1, len(caps)):
                for subset in itertools.combinations(caps, size):
                    keep = frozenset(subset)
                    sub_key = key + "|" + "+".join(f"{a.value}:{s.value}" for a, s in subset)
                    sub_groups = _keep(groups, functools.partial(_has_capability, config, keep))
                    plans[sub_key] = RoutePlan(
                        sub_key, route.name, api, sub_groups, route.retries, subset
                    )
                    narrowed.append((keep, sub_key))
            plans[key] = RoutePlan(
                key, route.name, api, groups, route.retries, caps, tuple(narrowed)
            )
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

"""Route: resolve the model name to a route, pin the request to its plan, or refuse.

The name goes through ``model_names`` (route names, aliases, patterns, the
default route). A plan whose candidates differ in what they can translate is
narrowed to the candidates that can serve this request (``routing``): each
capability of the plan is asked once, so a request costs at most one trial
translation per capability, and only on such mixed routes.
"""

from __future__ import annotations

from ..apis import route_key
from ..errors import GatewayError, clip
from ..routing import Capability, RoutePlan
from ..translate import refusal
from .step import Answer, RequestContext, Step

# The code of a translation's refusal for what a provider lacks; any other
# refusal is of a malformed request, which no group would serve.
UNSUPPORTED = "unsupported_for_provider"


class Route(Step):
    async def run(self, ctx: RequestContext) -> Answer | None:
        gw = ctx.gw
        config = gw.config
        asked = ctx.model
        route = config.model_names.resolve(
            asked, config.routes, lambda r: route_key(r, ctx.api) in gw.plans
        )
        if route is None:
            raise unknown_model(asked, config.routes)
        # Quotas and what follows key on the route the name stands for.
        ctx.model = route
        plan = gw.plans.get(route_key(route, ctx.api))
        if plan is None:
            shown = clip(asked) if asked == route else f"{clip(asked)} (route {clip(route)})"
            raise GatewayError(
                400,
                f"model {shown} cannot serve {clip(ctx.headers.get(':path', ''))}",
                code="model_not_supported",
                param="model",
            )
        ctx.plan = _narrow(plan, ctx) if plan.narrowed else plan
        return None


def _narrow(plan: RoutePlan, ctx: RequestContext) -> RoutePlan:
    """The plan's variant made of the candidates that can serve this request."""
    servable: list[Capability] = []
    first: GatewayError | None = None
    for cap in plan.capabilities:
        why = refusal(ctx.api, cap[0], cap[1], ctx.body)
        if why is None:
            servable.append(cap)
        elif why.code != UNSUPPORTED:
            raise why  # the request is at fault (bad JSON in tool arguments), not the provider
        elif first is None:
            first = why  # the capabilities come in group order: the first group's reason
    if len(servable) == len(plan.capabilities):
        return plan
    if first is not None and not servable:
        raise first
    return ctx.gw.plans[plan.narrowed_to(frozenset(servable))]


def unknown_model(model: str, routes: object) -> GatewayError:
    names = sorted(routes)  # type: ignore[call-overload]
    shown = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
    return GatewayError(
        404,
        f"The model {clip(model)} does not exist or is not served here; available: {shown}",
        code="model_not_found",
        param="model",
    )

"""Route: pin the request to the plan of its model and API, or refuse the model."""

from __future__ import annotations

from ..apis import route_key
from ..errors import GatewayError, clip
from .step import Answer, RequestContext, Step


class Route(Step):
    async def run(self, ctx: RequestContext) -> Answer | None:
        gw = ctx.gw
        ctx.plan = gw.plans.get(route_key(ctx.model, ctx.api))
        if ctx.plan is not None:
            return None
        if ctx.model in gw.config.routes:
            raise GatewayError(
                400,
                f"model {clip(ctx.model)} cannot serve {clip(ctx.headers.get(':path', ''))}",
                code="model_not_supported",
                param="model",
            )
        raise unknown_model(ctx.model, gw.config.routes)


def unknown_model(model: str, routes: object) -> GatewayError:
    names = sorted(routes)  # type: ignore[call-overload]
    shown = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
    return GatewayError(
        404,
        f"The model {clip(model)} does not exist or is not served here; available: {shown}",
        code="model_not_found",
        param="model",
    )

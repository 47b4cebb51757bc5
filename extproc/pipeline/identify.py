"""Identify the caller: the user, tenant and workload quotas are keyed by.

Only for models under a quota: identity headers mean nothing elsewhere, so a
bad one (too long) is refused only where it would be counted. Elsewhere the
caller is identified only when a completion listener records it.
"""

from __future__ import annotations

from ..quota.caller import identify
from .step import Answer, Needs, RequestContext, Step


class IdentifyCaller(Step):
    async def run(self, ctx: RequestContext) -> Answer | None:
        if ctx.gw.quotas.applies(ctx.model):
            ctx.caller = identify(ctx.gw.config.quota.identity, ctx.headers, ctx.api, ctx.body)
        elif Needs.CALLER in ctx.gw.record_needs:
            # Recorded only (telemetry, audit): never a reason to refuse.
            ctx.caller = identify(
                ctx.gw.config.quota.identity, ctx.headers, ctx.api, ctx.body, strict=False
            )
        return None

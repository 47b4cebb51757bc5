"""Identify the caller: the user, tenant and workload quotas are keyed by.

Only for models under a quota: identity headers mean nothing elsewhere, so a
bad one (too long) is refused only where it would be counted.
"""

from __future__ import annotations

from ..quota.caller import identify
from .step import Answer, RequestContext, Step


class IdentifyCaller(Step):
    async def run(self, ctx: RequestContext) -> Answer | None:
        if ctx.gw.quotas.applies(ctx.model):
            ctx.caller = identify(ctx.gw.config.quota.identity, ctx.headers, ctx.api, ctx.body)
        return None

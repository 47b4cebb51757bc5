"""Admit: reserve the request in every quota of its model, or refuse it (429).

The reservation is settled on completion (``settle``).
"""

from __future__ import annotations

import asyncio

from ..apis import ClientApi
from .step import Answer, RequestContext, Step


class AdmitQuotas(Step):
    def suspends(self, ctx: RequestContext) -> bool:
        # In-process counters and a small prompt: admission never waits, so
        # there is no time to buy and no departure mid-way to handle.
        return ctx.caller is not None and ctx.gw.quotas.suspends(len(ctx.raw))

    async def run(self, ctx: RequestContext) -> Answer | None:
        if ctx.caller is None or ctx.api is ClientApi.ANTHROPIC_COUNT_TOKENS:
            # Counting tokens is not a billed call: it reserves nothing and
            # counts as no request in any quota.
            return None
        quotas = ctx.gw.quotas
        admission = quotas.admit(ctx.caller, ctx.model, ctx.api, ctx.body, len(ctx.raw))
        if not self.suspends(ctx):
            ctx.reservation = await admission
            return None
        task = asyncio.ensure_future(admission)
        try:
            # Shielded: a client that leaves mid-admission must not leave a
            # reservation behind that nothing will settle.
            ctx.reservation = await asyncio.shield(task)
        except asyncio.CancelledError:
            quotas.abandoned(task)
            raise
        return None

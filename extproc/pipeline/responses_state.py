"""Responses state: refuse a Responses request its route could send where it cannot be served.

Stored responses, conversations and hosted tools live at one provider; the
rules are in ``translate.responses_support``. Runs after ``Route`` (it reads
the plan) and before quotas are reserved, so a refused request costs nothing.
"""

from __future__ import annotations

from ..apis import ClientApi
from ..translate.responses_support import check_plan
from .step import Answer, RequestContext, Step


class ResponsesState(Step):
    async def run(self, ctx: RequestContext) -> Answer | None:
        plan = ctx.plan
        if ctx.api is not ClientApi.OPENAI_RESPONSES or plan is None:
            return None
        cfg = ctx.gw.config
        providers = [cfg.providers[cfg.models[c.model].provider] for g in plan.groups for c in g]
        check_plan(ctx.body, plan.route, providers, cfg.defaults.anthropic_max_tokens)
        return None

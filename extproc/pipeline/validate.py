"""Validate: refuse what every provider of the caller's API would refuse (``validation``)."""

from __future__ import annotations

from .. import validation
from .step import Answer, RequestContext, Step


class Validate(Step):
    async def run(self, ctx: RequestContext) -> Answer | None:
        validation.check(ctx.api, ctx.body)
        ctx.model = ctx.body["model"]
        return None

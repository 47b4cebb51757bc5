"""Count tokens: answer ``POST /anthropic/v1/messages/count_tokens`` where no provider can.

A route whose first group is all Anthropic (the group that serves the route's
Messages) counts with the provider: the request goes on to be routed, and the
provider's count_tokens answers with the key injected (Envoy marks that answer
``x-sidegate-token-count: provider``). Any other route is answered here with
sidegate's own estimate (``extproc.estimate``: the count quotas admit by),
marked ``x-sidegate-token-count: estimate``. An unknown model, or a route
Anthropic clients cannot call, goes on for the route step to refuse.

Neither is a billed call: quota admission skips this API (``admit``).
"""

from __future__ import annotations

import asyncio
import json

from .. import tokenizer
from ..apis import ClientApi, route_key
from ..config import GatewayConfig, ProviderApi
from ..errors import GatewayError
from ..estimate import prompt_tokens
from .step import Answer, RequestContext, Step

TOKEN_COUNT_HEADER = "x-sidegate-token-count"


def counted_by_provider(config: GatewayConfig, route: str) -> bool:
    """Whether the route's Messages are served by Anthropic providers first (so they count)."""
    found = config.routes.get(route)
    if found is None or not found.groups:
        return False
    providers = (config.providers[config.models[c.model].provider] for c in found.groups[0])
    return all(p.api is ProviderApi.ANTHROPIC for p in providers)


class CountTokens(Step):
    def suspends(self, ctx: RequestContext) -> bool:
        # Loading the tokenizer (once) and counting run on a thread.
        return ctx.api is ClientApi.ANTHROPIC_COUNT_TOKENS

    async def run(self, ctx: RequestContext) -> Answer | None:
        if ctx.api is not ClientApi.ANTHROPIC_COUNT_TOKENS:
            return None
        gw, config = ctx.gw, ctx.gw.config
        # The route the name stands for, as the Messages call it counts for
        # would resolve it (aliases, patterns, the default route).
        name = config.model_names.resolve(
            ctx.model,
            config.routes,
            lambda r: route_key(r, ClientApi.ANTHROPIC_MESSAGES) in gw.plans,
        )
        route = config.routes.get(name) if name is not None else None
        messages = gw.plans.get(route_key(name, ClientApi.ANTHROPIC_MESSAGES)) if name else None
        if name is None or route is None or messages is None:
            return None  # unknown, or not callable with Messages: the route step refuses
        if counted_by_provider(config, name):
            ctx.model = name  # the route step pins this route's count_tokens plan
            return None
        model = config.models[route.groups[0][0].model]
        tokens = await asyncio.to_thread(_estimate, config, model.id, ctx)
        return Answer(
            200,
            json.dumps({"input_tokens": tokens}).encode(),
            "sidegate_count_tokens",
            headers={TOKEN_COUNT_HEADER: "estimate"},
        )


def _estimate(config: GatewayConfig, model_id: str, ctx: RequestContext) -> int:
    try:
        enc = tokenizer.load(tokenizer.encoding_for_model(model_id), config.quota.tokenizer_dir)
    except tokenizer.TokenizerError as e:
        raise GatewayError(
            503, f"sidegate cannot estimate tokens here: {e}", code="tokenizer_unavailable"
        ) from e
    return prompt_tokens(
        ClientApi.ANTHROPIC_MESSAGES, ctx.body, lambda text: len(enc.encode_ordinary(text))
    )

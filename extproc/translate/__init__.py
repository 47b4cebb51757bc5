"""Provider translation: one module per (client API, provider API) pair.

Each module holds pure functions over parsed JSON (request, response, error)
and a stream translator fed one SSE event at a time; ``exchange`` wires them
to the provider stage. A reader looking for a provider quirk finds it in the
module named for the API pair.
"""

from typing import Any

from ..apis import ClientApi
from ..config import ProviderApi, ResponsesSupport, StructuredOutputs
from ..errors import GatewayError
from .anthropic_anthropic import AnthropicToAnthropic
from .anthropic_count_tokens import AnthropicCountTokens
from .anthropic_openai import AnthropicToOpenAI
from .exchange import AttemptContext, Exchange, Outbound
from .openai_anthropic import OpenAIToAnthropic
from .openai_openai import OpenAIToOpenAI
from .responses_anthropic import ResponsesToAnthropic
from .responses_openai import ResponsesToChat, ResponsesToOpenAI

_PAIRS: dict[tuple[ClientApi, ProviderApi], type[Exchange]] = {
    (ClientApi.OPENAI_CHAT, ProviderApi.OPENAI): OpenAIToOpenAI,
    (ClientApi.OPENAI_EMBEDDINGS, ProviderApi.OPENAI): OpenAIToOpenAI,
    (ClientApi.OPENAI_CHAT, ProviderApi.ANTHROPIC): OpenAIToAnthropic,
    (ClientApi.ANTHROPIC_MESSAGES, ProviderApi.ANTHROPIC): AnthropicToAnthropic,
    # Translated to chat, unless the provider serves /responses itself (exchange_for).
    (ClientApi.OPENAI_RESPONSES, ProviderApi.OPENAI): ResponsesToChat,
    (ClientApi.OPENAI_RESPONSES, ProviderApi.ANTHROPIC): ResponsesToAnthropic,
    (ClientApi.ANTHROPIC_MESSAGES, ProviderApi.OPENAI): AnthropicToOpenAI,
    # Other providers have no count_tokens: pipeline.count_tokens estimates for them.
    (ClientApi.ANTHROPIC_COUNT_TOKENS, ProviderApi.ANTHROPIC): AnthropicCountTokens,
}


def can_serve(client_api: ClientApi, provider_api: ProviderApi) -> bool:
    return (client_api, provider_api) in _PAIRS


def refusal(
    client_api: ClientApi,
    provider_api: ProviderApi,
    structured: StructuredOutputs,
    body: dict[str, Any],
) -> GatewayError | None:
    """Why a provider of this API cannot serve ``body`` (None: it can)."""
    return _PAIRS[(client_api, provider_api)].refusal(body, structured)


def can_refuse(client_api: ClientApi, provider_api: ProviderApi) -> bool:
    """Whether this pair may refuse a request it can otherwise carry (``refusal``)."""
    pair = _PAIRS.get((client_api, provider_api))
    return pair is not None and pair.refusal.__func__ is not Exchange.refusal.__func__  # type: ignore[attr-defined]


def exchange_for(ctx: AttemptContext) -> Exchange:
    if (
        ctx.client_api is ClientApi.OPENAI_RESPONSES
        and ctx.provider.api is ProviderApi.OPENAI
        and ctx.provider.responses is ResponsesSupport.NATIVE
    ):
        return ResponsesToOpenAI(ctx)
    return _PAIRS[(ctx.client_api, ctx.provider.api)](ctx)


__all__ = ["AttemptContext", "Exchange", "Outbound", "can_serve", "exchange_for", "refusal"]

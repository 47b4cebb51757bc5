"""Provider translation: one module per (client API, provider API) pair.

Each module holds pure functions over parsed JSON (request, response, error)
and a stream translator fed one SSE event at a time; ``exchange`` wires them
to the provider stage. A reader looking for a provider quirk finds it in the
module named for the API pair.
"""

from ..apis import ClientApi
from ..config import ProviderApi
from .anthropic_anthropic import AnthropicToAnthropic
from .anthropic_count_tokens import AnthropicCountTokens
from .anthropic_openai import AnthropicToOpenAI
from .exchange import AttemptContext, Exchange, Outbound
from .openai_anthropic import OpenAIToAnthropic
from .openai_openai import OpenAIToOpenAI

_PAIRS: dict[tuple[ClientApi, ProviderApi], type[Exchange]] = {
    (ClientApi.OPENAI_CHAT, ProviderApi.OPENAI): OpenAIToOpenAI,
    (ClientApi.OPENAI_EMBEDDINGS, ProviderApi.OPENAI): OpenAIToOpenAI,
    (ClientApi.OPENAI_CHAT, ProviderApi.ANTHROPIC): OpenAIToAnthropic,
    (ClientApi.ANTHROPIC_MESSAGES, ProviderApi.ANTHROPIC): AnthropicToAnthropic,
    (ClientApi.ANTHROPIC_MESSAGES, ProviderApi.OPENAI): AnthropicToOpenAI,
    # Other providers have no count_tokens: pipeline.count_tokens estimates for them.
    (ClientApi.ANTHROPIC_COUNT_TOKENS, ProviderApi.ANTHROPIC): AnthropicCountTokens,
}


def can_serve(client_api: ClientApi, provider_api: ProviderApi) -> bool:
    return (client_api, provider_api) in _PAIRS


def exchange_for(ctx: AttemptContext) -> Exchange:
    return _PAIRS[(ctx.client_api, ctx.provider.api)](ctx)


__all__ = ["AttemptContext", "Exchange", "Outbound", "can_serve", "exchange_for"]

"""Which candidates of a route can serve a Responses request: settled before any attempt.

Stored state lives at the provider that made it: a ``previous_response_id``
(or a ``conversation``) made at provider A means nothing at provider B, and
a translated provider keeps no state at all. A request that needs the
provider's state or hosted tools is therefore accepted only when every
candidate of its route serves the Responses API itself, and, for a stored
response or conversation, when they are all one provider, so that no failover
can carry it elsewhere. Otherwise the caller gets a 400 naming the field
before anything is sent: failing over into a provider that answers "no such
response" (or a translation that cannot carry the field) would turn a
provider's outage into a confusing error. For the same reason every other
request is translated once here for each kind of translated candidate (chat,
Anthropic), so whatever a translation refuses is refused before the first
attempt, not when a failover reaches that candidate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..config import Provider, ProviderApi, ResponsesSupport
from ..errors import GatewayError, clip
from . import responses_anthropic
from . import responses_chat as rc
from .responses_chat import refusals, stateful_fields


def _native(provider: Provider) -> bool:
    return provider.api is ProviderApi.OPENAI and provider.responses is ResponsesSupport.NATIVE


def _names(providers: Iterable[Provider]) -> str:
    names = sorted({p.name for p in providers})
    return ", ".join(names[:5]) + (", …" if len(names) > 5 else "")


def check_plan(
    body: dict[str, Any], route: str, providers: list[Provider], anthropic_max_tokens: int
) -> None:
    """A 400 when ``route``'s candidates (``providers``) could not all serve ``body``."""
    needs_native = refusals(body)
    translated = [p for p in providers if not _native(p)]
    if needs_native and translated:
        param, why = needs_native[0]
        raise GatewayError(
            400,
            f"{param} needs a provider that serves the Responses API itself ({why}), "
            f"but model {clip(route)} may be answered by {_names(translated)}, "
            "which this request would be translated for",
            code="unsupported_for_route",
            param=param,
        )
    stateful = stateful_fields(body)
    if stateful and len({p.name for p in providers}) > 1:
        raise GatewayError(
            400,
            f"{stateful[0]} continues state kept by one provider, but model {clip(route)} "
            f"fails over between providers {_names(providers)}, and none can continue "
            "another's; use a model whose candidates are one provider",
            code="unsupported_for_route",
            param=stateful[0],
        )
    # One trial translation per kind of translated candidate (the model id
    # does not change what is refused).
    chat = next((p for p in translated if p.api is ProviderApi.OPENAI), None)
    if chat is not None:
        rc.translate_request(body, "model", chat.name)
    anthropic = next((p for p in translated if p.api is ProviderApi.ANTHROPIC), None)
    if anthropic is not None:
        responses_anthropic.translate_request(body, "model", anthropic.name, anthropic_max_tokens)

"""The model lists sidegate serves: the names each client API can use.

``GET /v1/models`` (and ``/v1/models/{name}``) lists, as OpenAI's does, every
name an OpenAI client can call, chat and embedding models alike: the routes
(every model is one) with a candidate the OpenAI APIs can reach, and the
aliases of ``model_names`` that lead to one. A route only Anthropic Messages
can reach is left out. Patterns and the default route are not listed: they
are not names. ``served_names`` gives the same for any client API (the
Anthropic list, ``/anthropic/v1/models``, is built from it).

Envoy answers these itself (``envoy_bootstrap``: direct responses, no message
to the ext_proc); the policy stage answers the same bodies for what reaches
it. ``created`` is 0: a route is not a model with a release date, and a fixed
value keeps the rendered Envoy config the same for the same sidegate config
(a reload that changes nothing pushes no new routes).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .apis import ClientApi, ErrorStyle, route_key
from .config import GatewayConfig
from .routing import plan_routes

# The paths OpenAI SDKs use for the list, under either base URL (endpoints.py).
LIST_PATHS = ("/v1/models", "/openai/v1/models")
# The client APIs an OpenAI base URL serves; the OpenAI list is their union.
OPENAI_APIS = tuple(api for api in ClientApi if api.error_style is ErrorStyle.OPENAI)


def served_names(config: GatewayConfig, apis: Iterable[ClientApi]) -> list[str]:
    """Route names and aliases that can serve at least one of ``apis``, sorted."""
    plans = plan_routes(config)
    wanted = tuple(apis)

    def serves(route: str) -> bool:
        return any(route_key(route, api) in plans for api in wanted)

    names = [r for r in config.routes if serves(r)]
    names += [a for a, r in config.model_names.aliases.items() if serves(r)]
    return sorted(names)


def cards(config: GatewayConfig) -> dict[str, dict[str, Any]]:
    return {
        name: {"id": name, "object": "model", "created": 0, "owned_by": "sidegate"}
        for name in served_names(config, OPENAI_APIS)
    }


def list_body(config: GatewayConfig) -> bytes:
    return json.dumps({"object": "list", "data": list(cards(config).values())}).encode()


def card_body(card: dict[str, Any]) -> bytes:
    return json.dumps(card).encode()

"""The model list sidegate serves (GET /v1/models, GET /v1/models/{name}): its route names.

Envoy answers these itself (``envoy_bootstrap``: direct responses, no message
to the ext_proc); the policy stage answers the same bodies for what reaches
it. ``created`` is 0: a route is not a model with a release date, and a fixed
value keeps the rendered Envoy config the same for the same sidegate config
(a reload that changes nothing pushes no new routes).
"""

from __future__ import annotations

import json
from typing import Any

from .config import GatewayConfig

# The paths OpenAI SDKs use for the list, under either base URL (endpoints.py).
LIST_PATHS = ("/v1/models", "/openai/v1/models")


def cards(config: GatewayConfig) -> dict[str, dict[str, Any]]:
    return {
        name: {"id": name, "object": "model", "created": 0, "owned_by": "sidegate"}
        for name in sorted(config.routes)
    }


def list_body(config: GatewayConfig) -> bytes:
    return json.dumps({"object": "list", "data": list(cards(config).values())}).encode()


def card_body(card: dict[str, Any]) -> bytes:
    return json.dumps(card).encode()

"""The Anthropic API's model list (GET /anthropic/v1/models, /anthropic/v1/models/{id}).

Shaped as Anthropic's: ``data`` of ``{type: "model", id, display_name,
created_at, ...}`` with ``has_more``, ``first_id`` and ``last_id``. It lists
the routes an Anthropic client can call, i.e. those with a plan for Anthropic
Messages (an Anthropic or a translatable OpenAI candidate; embedding-only
routes are left out). Envoy answers these as direct responses built from the
config (``envoy.bootstrap``), as it does the OpenAI list; the policy stage
answers the same bodies for what reaches it. The whole list is one page
(``has_more`` false): a gateway's routes are few, and Anthropic's SDK pages on
``has_more``. ``created_at`` is the epoch, which Anthropic documents for an
unknown release date; a fixed value keeps the rendered Envoy config stable.
"""

from __future__ import annotations

import json
from typing import Any

from .apis import ClientApi, route_key
from .config import GatewayConfig
from .routing import plan_routes

LIST_PATH = "/anthropic/v1/models"
# Claude Code probes its base URL (HEAD /api/hello) before its first call;
# HEAD or GET on the base URL itself checks that sidegate answers.
PROBE_PATHS = ("/anthropic", "/anthropic/", "/anthropic/api/hello")
EPOCH = "1970-01-01T00:00:00Z"


def cards(config: GatewayConfig) -> dict[str, dict[str, Any]]:
    plans = plan_routes(config)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(config.routes):
        plan = plans.get(route_key(name, ClientApi.ANTHROPIC_MESSAGES))
        if plan is None:
            continue
        card: dict[str, Any] = {
            "type": "model",
            "id": name,
            "display_name": name,
            "created_at": EPOCH,
        }
        windows = [config.models[c.model].context_window for g in plan.groups for c in g]
        if windows and all(w is not None for w in windows):
            # The smallest: a prompt that fits it fits whichever candidate serves.
            card["max_input_tokens"] = min(w for w in windows if w is not None)
        out[name] = card
    return out


def list_body(config: GatewayConfig) -> bytes:
    data = list(cards(config).values())
    return json.dumps(
        {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }
    ).encode()


def card_body(card: dict[str, Any]) -> bytes:
    return json.dumps(card).encode()

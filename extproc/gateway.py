"""The runtime a processor needs: config, route plans, key rings, requests in flight."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable

from .config import GatewayConfig
from .keys import KeyRing
from .routing import RoutePlan, plan_routes
from .state import RequestState, RequestTable


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.requests = RequestTable()
        self._ids = itertools.count(1)
        self._listeners: list[Callable[[RequestState], None]] = []
        self._id_prefix = f"sg-{os.getpid():x}-{int(time.time()):x}-"
        self.keys: dict[str, KeyRing] = {}
        self.reload(config)

    def reload(self, config: GatewayConfig) -> None:
        """Serve ``config`` from the next request on.

        Requests in flight keep the plan they were routed with. Key rings of
        providers whose key sources did not change are kept, so round-robin
        and cached key files carry over.
        """
        old = self.keys
        self.config = config
        self.plans: dict[str, RoutePlan] = plan_routes(config)
        self.keys = {
            name: ring
            if (ring := old.get(name)) is not None and ring.sources == p.keys
            else KeyRing(p)
            for name, p in config.providers.items()
        }
        created = int(time.time())
        self.model_cards = {
            name: {"id": name, "object": "model", "created": created, "owned_by": "sidegate"}
            for name in sorted(config.routes)
        }
        self.models_body = json.dumps(
            {"object": "list", "data": list(self.model_cards.values())}
        ).encode()

    def on_complete(self, listener: Callable[[RequestState], None]) -> None:
        """Call ``listener`` with each request's final state (budgets, audit, tests)."""
        self._listeners.append(listener)

    def attach(self, state: RequestState) -> None:
        state.holders += 1

    def release(self, state: RequestState) -> None:
        """A stage is done with ``state``; the last one out completes the request."""
        state.holders -= 1
        if state.holders > 0:
            return
        self.requests.pop(state.id)
        for listener in self._listeners:
            listener(state)

    def new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

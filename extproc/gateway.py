"""The runtime a processor needs: config, route plans, key rings, requests in flight."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import model_list, model_list_anthropic, pipeline
from .audit.audit_log import AuditLog, read_chain_key
from .config import ConfigError, GatewayConfig
from .keys import KeyRing
from .quota.enforcer import QuotaEnforcer
from .quota.store import MemoryStore
from .routing import RoutePlan, plan_routes
from .stages.message_count import MessageCounts
from .state import RequestState, RequestTable
from .telemetry import Telemetry
from .telemetry import start as start_telemetry
from .tokenizer import TokenizerError

if TYPE_CHECKING:
    from .quota.redis_store import RedisStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    config: GatewayConfig
    quotas: QuotaEnforcer
    redis: RedisStore | None


class Gateway:
    def __init__(self, config: GatewayConfig, *, telemetry: Telemetry | None = None) -> None:
        """``telemetry``: built by the caller (``telemetry.start``) to add metric
        readers of its own; else built here from ``config.telemetry``."""
        self.requests = RequestTable()
        # Once per process: exporters and their threads outlive reloads.
        self.telemetry = telemetry if telemetry is not None else start_telemetry(config.telemetry)
        self.telemetry.count_in_flight(self.requests.__len__)
        self._telemetry_settings = config.telemetry.start_settings
        # Outlive reloads: the bench and the tests read them across a run.
        self.messages = MessageCounts()
        self._ids = itertools.count(1)
        self._id_prefix = f"sg-{os.getpid():x}-{int(time.time()):x}-"
        self.keys: dict[str, KeyRing] = {}
        # Local counters outlive reloads; so does the Redis client while its config stands.
        self.local_counters = MemoryStore()
        self.redis: RedisStore | None = None
        # Replaced by a reload: each closes itself once its last reservation settles.
        self._retired: list[RedisStore] = []
        # Configured with each config; its sinks open when the server starts.
        self.audit = AuditLog()
        self.telemetry.count_audit_lost(self.audit.lost)
        # What the completion listeners read of each request's record beyond
        # the basics (pipeline.Needs): the stages fill in only that.
        self.record_needs = pipeline.Needs.NOTHING
        self.reload(config)
        self.requests.listeners.extend(pipeline.completion_listeners(self))
        # Listeners that hold a response's end until they are done (the durable audit log).
        listeners = self.requests.listeners
        self.requests.before_end.extend(
            hook for listener in listeners if (hook := getattr(listener, "ending", None))
        )
        self._update_needs()

    def prepare(self, config: GatewayConfig) -> Prepared:
        """Everything ``config`` needs that can fail, built without serving it yet.

        Run before Envoy is given the config, so that a Redis URL that cannot
        be read or an encoding that is missing refuses the config whole.
        Nothing connects here: the Redis client connects on first use.
        """
        redis_config = config.quota.state.redis
        redis = self.redis
        if redis_config is not None and (redis is None or redis.config != redis_config):
            # Imported only when configured: the embedded default never loads a Redis client.
            from .quota.redis_store import RedisStore

            try:
                redis = RedisStore(redis_config)
            except ValueError as e:
                raise ConfigError("state.redis.url", str(e).split(": ", 1)[-1]) from None
        elif redis_config is None:
            redis = None
        try:
            quotas = QuotaEnforcer(
                config.quota,
                config.models,
                config.routes,
                local=self.local_counters,
                remote=redis,
                output_default=config.defaults.reserve_output_tokens,
            )
        except TokenizerError as e:
            raise ConfigError("tokenizer", str(e)) from None
        read_chain_key(config.audit.chain_key)  # a key that cannot be read refuses the config
        return Prepared(config, quotas, redis)

    def reload(self, config: GatewayConfig) -> None:
        self.apply(self.prepare(config))

    def apply(self, prepared: Prepared) -> None:
        """Serve a prepared config from the next request on.

        Requests in flight keep the plan they were routed with. Key rings of
        providers whose key sources did not change are kept, so round-robin
        and cached key files carry over.
        """
        config = prepared.config
        if config.telemetry.start_settings != self._telemetry_settings:
            log.warning(
                "telemetry export settings changed in the config: they take effect on restart"
            )
            self._telemetry_settings = config.telemetry.start_settings
        old = self.keys
        if self.redis is not None and self.redis is not prepared.redis:
            # Requests in flight still settle through it; it closes after the last.
            self._retired = [s for s in self._retired if not s.closed]
            self._retired.append(self.redis)
            self.redis.retire()
        self.redis = prepared.redis
        self.quotas = prepared.quotas
        self.config = config
        self.plans: dict[str, RoutePlan] = plan_routes(config)
        self.keys = {
            name: ring
            if (ring := old.get(name)) is not None and ring.sources == p.keys
            else KeyRing(p)
            for name, p in config.providers.items()
        }
        self.model_cards = model_list.cards(config)
        self.models_body = model_list.list_body(config)
        self.anthropic_model_cards = model_list_anthropic.cards(config)
        self.anthropic_models_body = model_list_anthropic.list_body(config)
        self.audit.configure(config.audit)
        self._update_needs()  # a listener's needs may follow the config

    async def close(self) -> None:
        """Finish reconciliations and close connections to shared state; write the last records."""
        await self.audit.close()
        for store in [*self._retired, *([self.redis] if self.redis else [])]:
            await store.close()
        self._retired.clear()
        await asyncio.to_thread(self.telemetry.shutdown)

    def on_complete(self, listener: Callable[[RequestState], None]) -> None:
        """Call ``listener`` with each request's final state, after the pipeline's own."""
        self.requests.listeners.append(listener)
        self._update_needs()

    def _update_needs(self) -> None:
        self.record_needs = pipeline.needs(self.requests.listeners)

    def new_request_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

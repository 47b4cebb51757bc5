"""Pick up a changed gateway config without a restart; refuse a bad one.

The file is watched by ``FileWatch`` (which follows a ConfigMap's ``..data``
swap) and by content: a swap that brings the same bytes is not a change. A
config that fails to load, or that Envoy rejects, is logged with what is wrong
and the last good one keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from .config import ConfigError, GatewayConfig, parse_config_text
from .filewatch import FileWatch

log = logging.getLogger(__name__)

# Applies a config; returns why it was refused, or None.
Apply = Callable[[GatewayConfig, str], Awaitable[str | None]]


def digest_of(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()[:16]


class ConfigWatcher:
    def __init__(
        self,
        path: str | Path,
        *,
        current: bytes | None = None,
        interval: float = 1.0,
        adjust: Callable[[GatewayConfig], GatewayConfig] = lambda c: c,
    ) -> None:
        self.path = Path(path)
        self.interval = interval
        # Command-line overrides (``--port``) that must survive a reload.
        self.adjust = adjust
        self._watch = FileWatch(self.path)
        self.version = digest_of(current) if current is not None else None
        self.last_error: str | None = None

    def check(self) -> tuple[GatewayConfig, str] | None:
        """A changed, valid config and its version, or None. Invalid ones are refused here."""
        if not self._watch.changed():
            return None
        try:
            text = self.path.read_bytes()
        except OSError as e:
            self.refuse(f"cannot read {self.path}: {e.strerror}")
            return None
        version = digest_of(text)
        if version == self.version:
            return None
        try:
            config = self.adjust(parse_config_text(text, str(self.path)))
        except ConfigError as e:
            self.refuse(f"{self.path}: {e}" if e.path else str(e))
            return None
        return config, version

    def commit(self, version: str) -> None:
        self.version = version
        self.last_error = None
        log.info("config %s reloaded (version %s)", self.path, version)

    def refuse(self, message: str) -> None:
        self.last_error = message
        log.error("config refused, the last good config keeps serving: %s", message)

    async def poll(self, apply: Apply) -> bool:
        found = self.check()
        if found is None:
            return False
        config, version = found
        problem = await apply(config, version)
        if problem:
            # Remember the version so the same bad bytes are not retried every second.
            self.version = version
            self.refuse(problem)
            return False
        self.commit(version)
        return True

    async def run(self, apply: Apply) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll(apply)
            except Exception:  # a bug here must not stop future reloads
                log.exception("config reload failed")

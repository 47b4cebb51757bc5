"""The gateway's audit log: configured with each config, started with the server.

A gateway built to check a config (``sidegate config check``) never opens a
sink: the sinks open in ``start``, which the ext_proc server calls before it
serves. A reload that changes a sink, the durability or the queue closes the
writer (writing what it holds) and starts a new one; records of requests that
end meanwhile wait in the new writer's queue. Other changes apply at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ConfigError
from .config import AuditConfig, Durability, OnFailure
from .sink import Sink
from .writer import AuditWriter

if TYPE_CHECKING:
    from ..config import KeySource

log = logging.getLogger(__name__)

MIN_CHAIN_KEY = 16


def read_chain_key(source: KeySource | None) -> bytes | None:
    """The chain key's bytes; ConfigError naming the field when it cannot be read."""
    if source is None:
        return None
    if source.env is not None:
        value = os.environ.get(source.env, "").strip()
        if not value:
            raise ConfigError(
                "audit.chain_key.env", f"environment variable {source.env} is not set"
            )
    else:
        assert source.file is not None
        try:
            value = Path(source.file).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not text"
            raise ConfigError("audit.chain_key.file", f"cannot read {source.file}: {why}") from None
    if len(value) < MIN_CHAIN_KEY:
        raise ConfigError("audit.chain_key", f"the key must be at least {MIN_CHAIN_KEY} characters")
    return value.encode()


def build_sinks(cfg: AuditConfig) -> list[Sink]:
    key = read_chain_key(cfg.chain_key)
    sinks: list[Sink] = []
    if cfg.file is not None:
        from .file_sink import FileSink

        sinks.append(FileSink(cfg.file))
    if cfg.stdout:
        from .stdout_sink import StdoutSink

        sinks.append(StdoutSink())
    if cfg.otlp is not None:
        from .otlp_sink import OtlpSink

        sinks.append(OtlpSink(cfg.otlp))
    for sink in sinks:
        sink.chain.key = key
    return sinks


def _writer_part(cfg: AuditConfig) -> AuditConfig:
    """What the writer is built from; the rest (content, on_failure) applies live."""
    return dataclasses.replace(cfg, content=AuditConfig().content, on_failure=OnFailure.REFUSE)


class AuditLog:
    def __init__(self) -> None:
        self.config = AuditConfig()
        self.writer: AuditWriter | None = None
        self._started = False
        self._swap: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    @property
    def refusing(self) -> str | None:
        """Why new requests are refused (a durable sink fails under ``refuse``), or None."""
        writer = self.writer
        if writer is None or self.config.on_failure is not OnFailure.REFUSE:
            return None
        return writer.failing

    def lost(self) -> dict[str, int]:
        """Records lost so far, by sink (this writer's: a reload that moves the log starts at 0)."""
        writer = self.writer
        return dict(writer.lost) if writer is not None else {}

    def content_limit(self, route: str) -> int:
        """How much of a response on ``route`` to keep for its record (0: none)."""
        cfg = self.config
        return cfg.content.max_bytes if cfg.enabled and cfg.records_content(route) else 0

    def configure(self, cfg: AuditConfig) -> None:
        old, self.config = self.config, cfg
        if not self._started:
            return
        if self.writer is not None and _writer_part(old) == _writer_part(cfg):
            self.writer.cfg = cfg
            return
        previous = self.writer
        self.writer = AuditWriter(cfg, build_sinks(cfg)) if cfg.enabled else None
        self._swap_writers(previous, self.writer)

    def _swap_writers(self, old: AuditWriter | None, new: AuditWriter | None) -> None:
        before = self._swap

        def swap() -> None:
            if before is not None:
                before.join()
            if old is not None:
                old.close()  # releases the file (and its lock) before the new one opens it
            if new is not None:
                try:
                    new.start()
                except Exception as e:
                    log.error("audit: the reloaded audit log cannot start: %s", e)

        self._swap = threading.Thread(target=swap, name="sidegate-audit-reload", daemon=True)
        self._swap.start()

    async def start(self) -> None:
        """Open the sinks and start writing (the server calls this before serving)."""
        if self._started:
            return
        self._started = True
        if self.config.enabled:
            writer = AuditWriter(self.config, build_sinks(self.config))
            await asyncio.to_thread(writer.start)
            self.writer = writer

    def submit(self, record: dict[str, object]) -> Awaitable[bool] | None:
        """Queue ``record``. In the durable mode, what to await before the response ends."""
        writer = self.writer
        if writer is None:
            return None
        waiter = writer.submit(record, wait=self.config.durability is Durability.SYNC)
        return None if waiter is None else asyncio.wrap_future(waiter)

    async def close(self) -> None:
        swap = self._swap
        writer, self.writer = self.writer, None
        if swap is not None:
            await asyncio.to_thread(swap.join)
        if writer is not None:
            await asyncio.to_thread(writer.close)

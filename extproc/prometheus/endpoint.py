"""The scrape endpoint: HTTP/1.1 on a Unix socket, reached only through Envoy.

Envoy's probe listener routes ``GET <telemetry.prometheus.path>`` here (see
``envoy/probe.py``); the socket is mode 0600 in the sidecar's run dir, so the
app cannot reach it. One answer is sidegate's metrics, then Envoy's stats read
from its admin socket. When Envoy's admin does not answer, sidegate's part is
still served and ``sidegate_envoy_stats_up`` is 0.

Rendering runs in a worker thread: the event loop serving ext_proc messages
only parses the request line and writes the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

from .config import PrometheusConfig
from .envoy_stats import EnvoyStatsError, fetch
from .exposition import Exposition

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
SOCKET_MODE = 0o600
MAX_HEAD = 8192
HEAD_TIMEOUT = 5.0
# Scrapes at once; Prometheus sends one per target at a time, so more is a fault.
MAX_CONCURRENT = 4

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: bytes
    body: bytes
    content_type: bytes = b"text/plain; charset=utf-8"


class MetricsEndpoint:
    def __init__(
        self, exposition: Exposition, config: PrometheusConfig, admin_socket: str | None
    ) -> None:
        self.exposition = exposition
        # Replaced on a config reload (envoy_stats takes effect at once).
        self.config = config
        self.admin_socket = admin_socket
        self._busy = asyncio.Semaphore(MAX_CONCURRENT)
        self._envoy_was_up = True
        self._server: asyncio.Server | None = None

    async def start(self, path: str) -> None:
        """Serve on ``path``, mode 0600: only Envoy (the same uid) may connect.

        Bound in a private directory and moved into place once restricted, as
        the ext_proc socket is: at its path it never accepts anyone else.
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        private = tempfile.mkdtemp(prefix=".metrics-", dir=os.path.dirname(path) or ".")
        try:
            bound = os.path.join(private, "s")
            self._server = await asyncio.start_unix_server(self._serve, bound, limit=MAX_HEAD)
            os.chmod(bound, SOCKET_MODE)
            os.replace(bound, path)
        finally:
            shutil.rmtree(private, ignore_errors=True)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.exposition.shutdown()

    async def scrape(self) -> bytes:
        """sidegate's metrics, then Envoy's stats (unless envoy_stats is none)."""
        envoy: bytes | None = None
        mode = self.config.envoy_stats
        if mode != "none" and self.admin_socket:
            try:
                envoy = await fetch(self.admin_socket, used_only=mode == "used")
            except EnvoyStatsError as e:
                if self._envoy_was_up:
                    log.warning("metrics: serving without Envoy's stats: %s", e)
            self._envoy_was_up = envoy is not None
        up = None if mode == "none" or not self.admin_socket else envoy is not None
        ours = await asyncio.to_thread(self.exposition.render, up)
        if not envoy:
            return ours
        return ours + (b"" if ours.endswith(b"\n") else b"\n") + envoy

    async def _answer(self, head: bytes) -> _Answer:
        line = head.split(b"\r\n", 1)[0].split(b" ")
        if len(line) != 3 or not line[2].startswith(b"HTTP/1."):
            return _Answer(b"400 Bad Request", b"bad request line\n")
        method, target = line[0], line[1].split(b"?", 1)[0]
        if target != self.config.path.encode():
            return _Answer(b"404 Not Found", b"not found\n")
        if method not in (b"GET", b"HEAD"):
            return _Answer(b"405 Method Not Allowed", b"GET only\n")
        if self._busy.locked():
            return _Answer(b"503 Service Unavailable", b"too many scrapes at once\n")
        async with self._busy:
            body = await self.scrape()
        return _Answer(b"200 OK", b"" if method == b"HEAD" else body, CONTENT_TYPE)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
            answer = await self._answer(head)
            head = b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n" % (
                answer.status,
                answer.content_type,
                len(answer.body),
            )
            writer.write(head + b"connection: close\r\n\r\n")
            writer.write(answer.body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client gone or a malformed head: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

"""A real gateway for tests: the ext_proc service in a background thread, real Envoy as a child."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from extproc.config import GatewayConfig, parse_config
from extproc.envoy.admin import request as admin_request
from extproc.envoy.bootstrap import render_yaml
from extproc.gateway import Gateway
from extproc.runner import find_envoy
from extproc.stages.server import start_server
from extproc.state import RequestState
from extproc.telemetry import Telemetry
from tests.secret_scan import PRODUCED


def wait_until(
    condition: Callable[[], object], what: str, timeout: float = 10.0, every: float = 0.02
) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    def __init__(self, doc: dict[str, Any], telemetry: Telemetry | None = None) -> None:
        """``telemetry``: built by the test (``telemetry.start``, e.g. with a metric reader)."""
        self.workdir = Path(tempfile.mkdtemp(prefix="sidegate-test-"))
        doc = dict(doc)
        doc.setdefault("listen", {})["port"] = free_port()
        doc.setdefault("envoy", {}).setdefault("concurrency", 1)
        (self.workdir / "sidegate.yaml").write_text(yaml.safe_dump(doc))
        self.config: GatewayConfig = parse_config(doc)
        self.gateway = Gateway(self.config, telemetry=telemetry)
        # The keys this gateway uses: the suite's logs, spans and audit records must hold none.
        PRODUCED.keys.update(k for ring in self.gateway.keys.values() for k in ring.values())
        self.completed: list[RequestState] = []
        self.gateway.on_complete(self.completed.append)
        self.socket = str(self.workdir / "extproc.sock")
        self.admin_socket = str(self.workdir / "envoy-admin.sock")
        self.loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self.envoy: subprocess.Popen[bytes] | None = None
        self.log = self.workdir / "envoy.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.config.listen.port}"

    def start(self) -> GatewayProcess:
        started = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(start_server(self.gateway, self.socket))
            started.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=main, name="extproc", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise AssertionError("the ext_proc server did not start within 10 s")
        bootstrap = self.workdir / "envoy.yaml"
        bootstrap.write_text(render_yaml(self.config, self.socket, self.admin_socket))
        # Envoy keeps its own descriptor of the log; ours is closed at once.
        with self.log.open("wb") as log_file:
            self.envoy = subprocess.Popen(
                [
                    find_envoy(),
                    "-c",
                    str(bootstrap),
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warning",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.envoy.poll() is None, self.log.read_text()
            answer = admin_request(self.admin_socket, "GET", "/ready")
            if answer is not None and answer[0] == 200:
                return self
            time.sleep(0.05)
        raise AssertionError("Envoy did not become ready:\n" + self.log.read_text())

    def wait_completed(self, count: int, timeout: float = 5.0) -> list[RequestState]:
        """The completed requests, once there are ``count``; fails if they do not come in time.

        ``count`` is absolute (``len(completed)`` before the request + 1), so a
        caller never reads the previous request's state by mistake.
        """
        wait_until(
            lambda: len(self.completed) >= count,
            f"{count} completed requests (have {len(self.completed)})",
            timeout,
        )
        return self.completed

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.terminate()
            self.envoy.wait(10)
            PRODUCED.file("log", "envoy", self.log)
        if self._thread is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(5)
            asyncio.run_coroutine_threadsafe(self.gateway.close(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            assert not self._thread.is_alive(), "the ext_proc thread did not stop"
        self.loop.close()


def env_keys(**keys: str) -> None:
    os.environ.update(keys)

"""``sidegate inject serve``: the HTTPS admission webhook.

The API server calls ``POST /inject?timeout=10s`` with a JSON AdmissionReview;
``GET /healthz`` is for the Deployment's probes. The certificate is re-read
when its files change (a Secret volume's ``..data`` swap after cert-manager or
``helm upgrade`` renews it), checked at most once a second, so new connections
get the new certificate without a restart.

Load is bounded twice. Each open connection holds a thread, up to
``max_connections``; past that, new connections wait in the listen backlog. A
whole request must arrive within ``request_timeout`` of the connection opening
(or of the previous answer on it), so a slow or silent client cannot keep a
thread. Reviews are then parsed and injected at most ``max_inflight`` at a time
(pure Python under one lock: more at once only slows all of them). A review
that finds no free slot waits briefly, then gets ``429`` with ``Retry-After: 1``:
the API server's client (client-go) retries such an answer after that second,
within its own webhook timeout, where a dropped connection would fail the pod
at once under ``failurePolicy: Fail``. The wait is kept under half the timeout
the API server states in the query string, so its retry still fits.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ..filewatch import FileWatch
from .review import BadReview, answer, parse_review
from .settings import Settings, load_settings

log = logging.getLogger(__name__)
MAX_BODY = 8 * 1024 * 1024  # the API server caps request objects near 3 MiB
_GO_SECONDS = re.compile(r"([0-9]{1,4})s")  # client-go writes its timeout as Go's "10s"


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 128  # threads, each blocked on one connection's socket
    max_inflight: int = 4  # reviews parsed and injected at once
    queue_wait: float = 2.0  # longest wait for an inflight slot before answering 429
    request_timeout: float = 10.0  # to receive a whole request, headers and body

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_inflight"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("queue_wait", "request_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0 seconds")


def _stated_timeout(path: str) -> float | None:
    """The ``timeout`` the API server put in the query string, in seconds."""
    query = path.partition("?")[2]
    if not query or len(query) > 256:
        return None
    values = parse_qs(query).get("timeout") or [""]
    match = _GO_SECONDS.fullmatch(values[0])
    return float(match.group(1)) if match else None


class _DeadlineReader(io.RawIOBase):
    """Socket reads that fail once the handler's deadline has passed.

    A socket timeout alone bounds each read, so a client sending a byte every
    few seconds could hold a thread for ever; this bounds them all together.
    """

    def __init__(self, sock: socket.socket, handler: _Handler) -> None:
        self._sock, self._handler = sock, handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._handler.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request did not arrive in time")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class CertReloader:
    def __init__(self, cert: str, key: str) -> None:
        self.cert, self.key = cert, key
        self._lock = threading.Lock()
        self._watch = FileWatch(cert, key, every=1.0)
        self._context = self._load()

    def _load(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def context(self) -> ssl.SSLContext:
        with self._lock:
            if self._watch.changed():
                try:
                    self._context = self._load()
                    log.info("reloaded the serving certificate %s", self.cert)
                except (OSError, ssl.SSLError) as e:
                    # Mid-swap or a bad pair: keep serving the last good one, look again.
                    self._watch.retry()
                    log.warning("keeping the previous certificate: %s", e)
            return self._context


class SettingsReloader:
    """The injector ConfigMap, re-read on change; a bad one keeps the last good."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._watch = FileWatch(path, every=1.0) if path else None
        self._settings = load_settings(path)

    def get(self) -> Settings:
        with self._lock:
            if self._watch is not None and self._watch.changed():
                try:
                    self._settings = load_settings(self.path)
                    log.info("reloaded injector settings %s", self.path)
                except ValueError as e:
                    log.error("injector settings refused, keeping the last good: %s", e)
            return self._settings


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"
    deadline = 0.0

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    def handle_one_request(self) -> None:
        # From the connection opening, or the previous answer, to a whole request.
        self.deadline = time.monotonic() + self.server.limits.request_timeout
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _send(
        self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        body = json.dumps(doc).encode()
        self.connection.settimeout(self.server.limits.request_timeout)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": message}, headers)

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] in ("/healthz", "/readyz"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"no such path {self.path.split('?', 1)[0][:64]}; POST /inject")

    def _discard(self, length: int) -> None:
        """Read and drop the body, so the answer is not lost to a reset on close."""
        while length > 0:
            chunk = self.rfile.read(min(length, 64 * 1024))
            if not chunk:
                break
            length -= len(chunk)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/inject":
            self.close_connection = True  # the body is not read
            self._error(404, f"no such path {path[:64]}; POST /inject")
            return
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            self.close_connection = True
            self._error(415, f"expected Content-Type application/json, got {ctype[:64] or 'none'}")
            return
        try:
            length = int(self.headers.get("Content-Length") or "")
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._error(411, "a Content-Length is required")
            return
        if length > MAX_BODY:
            self.close_connection = True
            self._error(413, f"the review is {length} bytes; the limit is {MAX_BODY}")
            return
        limits = self.server.limits
        stated = _stated_timeout(self.path)
        wait = limits.queue_wait if stated is None else min(limits.queue_wait, stated * 0.4)
        # The slot is taken before the body is read: it bounds memory as well as CPU.
        if not self.server.inflight.acquire(timeout=wait):
            self._discard(length)
            log.warning(
                "busy: %d reviews in progress; answered 429 after %.1f s",
                limits.max_inflight,
                wait,
            )
            self._error(
                429,
                "the sidegate injector is busy; retry in a second",
                {"Retry-After": "1"},
            )
            return
        try:
            self._review(length)
        finally:
            self.server.inflight.release()

    def _review(self, length: int) -> None:
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return  # the client went away mid-body
        try:
            review = parse_review(body)
        except BadReview as e:
            self._error(400, str(e))
            return
        try:
            self._send(200, answer(review, self.server.settings.get()))
        except Exception:
            log.exception("injection failed")
            self._error(500, "internal error in the sidegate injector; see its log")


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the listen backlog: where connections wait for a thread

    def __init__(
        self,
        address: tuple[str, int],
        certs: CertReloader,
        settings: SettingsReloader,
        limits: Limits | None = None,
    ) -> None:
        self.certs, self.settings = certs, settings
        self.limits = limits or Limits()
        self.inflight = threading.BoundedSemaphore(self.limits.max_inflight)
        self._connections = threading.BoundedSemaphore(self.limits.max_connections)
        self._closing = threading.Event()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = self.socket.accept()
        conn.settimeout(self.limits.request_timeout)
        # The handshake runs in the handler thread, not the accept loop.
        tls = self.certs.context().wrap_socket(
            conn, server_side=True, do_handshake_on_connect=False
        )
        return tls, addr

    def process_request(self, request: Any, client_address: Any) -> None:
        # Block the accept loop until a thread is free: later connections queue
        # in the backlog. A connection that waited longer than a request may
        # take is closed; its client has given up or soon will.
        deadline = time.monotonic() + self.limits.request_timeout
        while not self._connections.acquire(timeout=0.25):
            if self._closing.is_set() or time.monotonic() > deadline:
                log.warning("all %d connections busy; closed one", self.limits.max_connections)
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._connections.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def shutdown(self) -> None:
        self._closing.set()
        super().shutdown()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


def serve(
    host: str,
    port: int,
    cert: str,
    key: str,
    settings_path: str | None,
    limits: Limits | None = None,
) -> WebhookServer:
    for path in (cert, key):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no TLS file at {path}")
    return WebhookServer(
        (host, port), CertReloader(cert, key), SettingsReloader(settings_path), limits
    )

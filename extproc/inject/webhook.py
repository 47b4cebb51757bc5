"""``sidegate inject serve``: the HTTPS admission webhook.

The API server calls ``POST /inject?timeout=10s`` with a JSON AdmissionReview;
``GET /healthz`` is for the Deployment's probes. The certificate is re-read
when its files change (a Secret volume's ``..data`` swap after cert-manager or
``helm upgrade`` renews it), checked at most once a second, so new connections
get the new certificate without a restart.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ..filewatch import FileWatch
from .review import BadReview, answer, parse_review
from .settings import Settings, load_settings

log = logging.getLogger(__name__)
MAX_BODY = 8 * 1024 * 1024  # the API server caps request objects near 3 MiB


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

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _send(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] in ("/healthz", "/readyz"):
            self._send(200, {"status": "ok"})
        else:
            self._error(404, f"no such path {self.path.split('?', 1)[0]}; POST /inject")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/inject":
            self._error(404, f"no such path {path}; POST /inject")
            return
        ctype = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/json":
            self._error(415, f"expected Content-Type application/json, got {ctype or 'none'}")
            return
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            self._error(411, "a Content-Length is required")
            return
        if length > MAX_BODY:
            self._error(413, f"the review is {length} bytes; the limit is {MAX_BODY}")
            return
        body = self.rfile.read(length)
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
    # A slow or silent client must not hold a thread forever.
    timeout_per_connection = 15.0

    def __init__(
        self, address: tuple[str, int], certs: CertReloader, settings: SettingsReloader
    ) -> None:
        self.certs, self.settings = certs, settings
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = self.socket.accept()
        conn.settimeout(self.timeout_per_connection)
        # The handshake runs in the handler thread, not the accept loop.
        tls = self.certs.context().wrap_socket(
            conn, server_side=True, do_handshake_on_connect=False
        )
        return tls, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


def serve(host: str, port: int, cert: str, key: str, settings_path: str | None) -> WebhookServer:
    for path in (cert, key):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no TLS file at {path}")
    return WebhookServer((host, port), CertReloader(cert, key), SettingsReloader(settings_path))

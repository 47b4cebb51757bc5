"""Is each provider reachable, and is each of its keys accepted? Asked before the first request.

``sidegate config check --probe`` resolves every provider's host, connects
(TCP, then TLS with the same trust store and server name Envoy uses), and makes
one cheap authenticated call per key: ``GET {base_url}/models`` for OpenAI,
``GET {base_url}/v1/models`` for Anthropic. Keys are sent only to the provider
they belong to and never printed; a reply body is never echoed (a provider's
401 may quote part of the key).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import ipaddress
import logging
import os
import socket
import ssl
import threading
from dataclasses import dataclass, field

from .config import GatewayConfig, Provider, ProviderApi
from .envoy.bootstrap import SYSTEM_CA
from .keys import KeyRing, MissingKey

DEFAULT_TIMEOUT = 5.0
log = logging.getLogger(__name__)


@dataclass
class ProviderReport:
    provider: str
    base_url: str
    # Steps that succeeded, in order ("resolved api.openai.com to 1.2.3.4", "TLS ok").
    steps: list[str] = field(default_factory=list)
    problem: str | None = None  # why the provider cannot be reached at all
    keys: list[str] = field(default_factory=list)  # one verdict per key source
    ok: bool = True

    def lines(self) -> list[str]:
        head = f"provider {self.provider} ({self.base_url}): "
        if self.problem:
            return [head + "UNREACHABLE: " + self.problem]
        return [head + "; ".join(self.steps), *(f"  {k}" for k in self.keys)]


def _tls_context(provider: Provider) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=provider.ca_file or _system_ca())
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _system_ca() -> str | None:
    # The bundle Envoy is given; None lets Python find the platform's own.
    return SYSTEM_CA if os.path.isfile(SYSTEM_CA) else None


def _connect(provider: Provider, timeout: float, report: ProviderReport) -> bool:
    try:
        infos = socket.getaddrinfo(provider.host, provider.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        report.problem = f"the host {provider.host!r} did not resolve ({e.strerror})"
        return False
    addresses = sorted({str(i[4][0]) for i in infos})
    report.steps.append(f"{provider.host} resolved to {', '.join(addresses[:3])}")
    try:
        sock = socket.create_connection((provider.host, provider.port), timeout=timeout)
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        report.problem = f"cannot connect to {provider.host}:{provider.port}: {reason}"
        return False
    with sock:
        report.steps.append(f"TCP {provider.port} connected")
        if not provider.tls:
            return True
        try:
            with _tls_context(provider).wrap_socket(sock, server_hostname=provider.host):
                pass
        except ssl.SSLCertVerificationError as e:
            report.problem = (
                f"TLS: the certificate of {provider.host} is not trusted "
                f"({e.verify_message}); trust store: {provider.ca_file or 'the system bundle'}"
            )
            return False
        except (ssl.SSLError, OSError) as e:
            report.problem = f"TLS handshake with {provider.host} failed: {e}"
            return False
    report.steps.append("TLS certificate valid for " + provider.host)
    return True


def _models_path(provider: Provider) -> str:
    if provider.api is ProviderApi.ANTHROPIC:
        return f"{provider.base_path}/v1/models"
    return f"{provider.base_path}/models"


def _auth(provider: Provider, key: str) -> dict[str, str]:
    if provider.api is ProviderApi.ANTHROPIC:
        return {"x-api-key": key, "anthropic-version": provider.anthropic_version}
    return {"authorization": f"Bearer {key}"}


def _try_key(provider: Provider, key: str, timeout: float) -> str:
    conn: http.client.HTTPConnection
    if provider.tls:
        conn = http.client.HTTPSConnection(
            provider.host, provider.port, timeout=timeout, context=_tls_context(provider)
        )
    else:
        conn = http.client.HTTPConnection(provider.host, provider.port, timeout=timeout)
    path = _models_path(provider)
    try:
        conn.request("GET", path, headers={**_auth(provider, key), "user-agent": "sidegate-probe"})
        resp = conn.getresponse()
        resp.read(65536)  # bounded; never shown
        status = resp.status
    except (OSError, http.client.HTTPException) as e:
        return f"no answer to GET {path}: {e}"
    finally:
        conn.close()
    if status == 200:
        return "accepted"
    if status in (401, 403):
        return f"REJECTED (GET {path} answered {status})"
    return f"not verified: GET {path} answered {status}"


def check_provider(provider: Provider, timeout: float = DEFAULT_TIMEOUT) -> ProviderReport:
    report = ProviderReport(provider.name, provider.base_url)
    if not _connect(provider, timeout, report):
        report.ok = False
        return report
    for i, source in enumerate(provider.keys):
        label = f"keys[{i}] ({source.describe()}): "
        try:
            # A ring of this one source: the same reading (and errors) as at run time.
            key = KeyRing(dataclasses.replace(provider, keys=(source,))).next()
        except MissingKey as e:
            report.keys.append(label + f"MISSING: {str(e).split(': ', 1)[-1]}")
            report.ok = False
            continue
        verdict = _try_key(provider, key.value, timeout)
        report.ok = report.ok and verdict == "accepted"
        report.keys.append(label + verdict)
    return report


def check_providers(
    config: GatewayConfig, timeout: float = DEFAULT_TIMEOUT
) -> list[ProviderReport]:
    """Every provider, checked in parallel (a slow one does not hold up the others)."""
    providers = list(config.providers.values())
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(providers))) as pool:
        return list(pool.map(lambda p: check_provider(p, timeout), providers))


def warn_unresolved(config: GatewayConfig) -> None:
    """Log, in the background, every provider whose host does not resolve.

    Envoy only answers such a provider's requests with a 503; this puts the
    cause in the log at start, without delaying the start on a slow resolver.
    """

    def check(provider: Provider) -> None:
        try:
            socket.getaddrinfo(provider.host, provider.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            log.warning(
                "provider %s: the host %s of its base_url does not resolve (%s); its requests "
                "fail with 503 until it does",
                provider.name,
                provider.host,
                e.strerror,
            )

    for provider in config.providers.values():
        try:
            ipaddress.ip_address(provider.host)
            continue
        except ValueError:
            pass
        threading.Thread(target=check, args=(provider,), name="dns-check", daemon=True).start()

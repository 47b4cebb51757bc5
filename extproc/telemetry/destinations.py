"""Where OTLP goes: from the config, else the standard ``OTEL_EXPORTER_OTLP_*`` variables.

No SDK import here: ``start`` decides from this whether to load the SDK at all.
"""

from __future__ import annotations

import os
from typing import Any

from .config import Export, Protocol


def protocol_for(export: Export, signal: str, env: os._Environ[str] | dict[str, str]) -> Protocol:
    if export.protocol is not None:
        return export.protocol
    value = env.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", ""
    )
    return Protocol.GRPC if value.strip() == "grpc" else Protocol.HTTP


def exports(signal: str, export: Export, env: os._Environ[str] | dict[str, str]) -> bool:
    """Whether ``signal`` (TRACES or METRICS) has an OTLP destination at all.

    The config's endpoint, or the standard variables: an endpoint, or
    ``OTEL_<SIGNAL>_EXPORTER=otlp`` for the SDK's default endpoint. ``none``
    turns the signal's export off.
    """
    chosen = env.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    if chosen == "none":
        return False
    return bool(
        export.endpoint
        or chosen == "otlp"
        or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def endpoint_for(export: Export, protocol: Protocol, path: str) -> str | None:
    """The config's endpoint for one signal (HTTP appends the signal's path, as the env does)."""
    if export.endpoint is None:
        return None
    if protocol is Protocol.HTTP:
        return export.endpoint.rstrip("/") + path
    return export.endpoint


def exporter_args(
    export: Export, signal: str, path: str, env: os._Environ[str] | dict[str, str]
) -> tuple[Protocol, dict[str, Any]]:
    """The protocol and the OTLP exporter's keyword arguments for ``signal`` (TRACES, METRICS).

    Unset arguments are left to the exporter, which reads the standard
    variables itself; a plain-HTTP gRPC endpoint is insecure, as the env's is.
    """
    protocol = protocol_for(export, signal, env)
    endpoint = endpoint_for(export, protocol, path)
    kwargs: dict[str, Any] = {}
    if endpoint is not None:
        kwargs["endpoint"] = endpoint
        if protocol is Protocol.GRPC and endpoint.startswith("http://"):
            kwargs["insecure"] = True
    if export.timeout is not None:
        kwargs["timeout"] = export.timeout
    return protocol, kwargs

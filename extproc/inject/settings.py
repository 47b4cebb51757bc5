"""Cluster-wide injector settings: the chart renders them into a ConfigMap.

Keys are camelCase like the chart's values. Every error names the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROVIDERS = ("openai", "anthropic", "gemini")
CAPTURE_MODES = ("env", "iptables", "none")
OTLP_PROTOCOLS = ("grpc", "http/protobuf")
_OTEL_NAME = re.compile(r"OTEL_[A-Z0-9_]{1,120}")
_METRICS_PATH = re.compile(r"/[A-Za-z0-9._~/-]{0,127}")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
# Kubernetes' own quantity grammar (signed number; binary SI, decimal SI or exponent suffix).
# apimachinery's regular expression is safe under Go's linear engine but backtracks
# quadratically in Python on long digit runs. Here every quantifier is possessive
# (Python 3.11): a failed match never re-reads what a quantifier took, so the time
# is linear in the value, and the callers cap the length before matching anyway.
_QUANTITY = re.compile(
    r"[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:[eE][+-]?+[0-9]++|[KMGTPE]i|[mkMGTPE])?+"
)
MAX_QUANTITY = 64  # "9223372036854775807", the int64 maximum, is 19; nobody writes 64
_DNS1123_CHARS = re.compile(r"[-a-z0-9]++")


class SettingsError(ValueError):
    pass


def is_quantity(value: str) -> bool:
    return len(value) <= MAX_QUANTITY and _QUANTITY.fullmatch(value) is not None


def is_dns_label(value: str) -> bool:
    return (
        0 < len(value) <= 63
        and _DNS1123_CHARS.fullmatch(value) is not None
        and value[0] != "-"
        and value[-1] != "-"
    )


def is_dns_subdomain(value: str) -> bool:
    # Label by label: one pattern over the whole name would nest quantifiers.
    return len(value) <= 253 and all(is_dns_label(label) for label in value.split("."))


@dataclass(frozen=True, slots=True)
class Resources:
    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None

    def to_k8s(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        requests = {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v}
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v}
        if requests:
            out["requests"] = requests
        if limits:
            out["limits"] = limits
        return out


@dataclass(frozen=True, slots=True)
class Otlp:
    """Where the ext_proc sidecar exports (the standard OTEL_* variables it gets)."""

    endpoint: str = ""
    protocol: str = "grpc"
    # A key of the provider-keys Secret whose value is OTEL_EXPORTER_OTLP_HEADERS.
    headers_secret_key: str = ""
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Settings:
    image: str = "ghcr.io/sidegate/sidegate:0.1.0"
    proxy_image: str = "envoyproxy/envoy:v1.40.0"
    image_pull_policy: str = "IfNotPresent"
    native_sidecars: bool = True
    providers: tuple[str, ...] = ("openai", "anthropic")
    capture: str = "env"
    capture_ports: tuple[int, ...] = (80,)
    listen_port: int = 14000
    ready_port: int = 15021
    proxy_uid: int = 1337
    concurrency: int = 2
    drain_seconds: int = 15
    config_map: str = "sidegate-config"
    config_key: str = "sidegate.yaml"
    secret_name: str = "sidegate-provider-keys"
    excluded_namespaces: tuple[str, ...] = ("kube-system", "kube-public")
    proxy_resources: Resources = field(
        default_factory=lambda: Resources(cpu="50m", memory="64Mi", memory_limit="256Mi")
    )
    extproc_resources: Resources = field(
        default_factory=lambda: Resources(cpu="50m", memory="128Mi", memory_limit="512Mi")
    )
    # The scrape path on ready_port (the gateway config's telemetry.prometheus);
    # None when the sidecar serves no metrics.
    metrics_path: str | None = "/metrics"
    # prometheus.io/scrape, port and path on injected pods.
    scrape_annotations: bool = True
    otlp: Otlp = field(default_factory=Otlp)


def _resources(doc: Any, key: str, default: Resources) -> Resources:
    if doc is None:
        return default
    if not isinstance(doc, dict):
        raise SettingsError(f"{key}: expected a mapping with requests/limits")
    values: dict[str, str | None] = {}
    for part, names in (("requests", ("cpu", "memory")), ("limits", ("cpu", "memory"))):
        section = doc.get(part) or {}
        if not isinstance(section, dict):
            raise SettingsError(f"{key}.{part}: expected a mapping with cpu/memory")
        for name in names:
            value = section.get(name)
            if value is None:
                continue
            if not is_quantity(str(value)):
                raise SettingsError(f"{key}.{part}.{name}: {value!r} is not a Kubernetes quantity")
            field_name = name if part == "requests" else f"{name}_limit"
            values[field_name] = str(value)
    return Resources(**values)


def _otlp(doc: Any) -> Otlp:
    if doc is None:
        return Otlp()
    if not isinstance(doc, dict):
        raise SettingsError("otlp: expected a mapping with endpoint/protocol/headersSecretKey/env")
    unknown = sorted(set(doc) - {"endpoint", "protocol", "headersSecretKey", "env"})
    if unknown:
        raise SettingsError(f"unknown otlp setting(s): {', '.join(map(str, unknown))}")
    endpoint = doc.get("endpoint") or ""
    if not isinstance(endpoint, str) or (
        endpoint and not endpoint.startswith(("http://", "https://"))
    ):
        raise SettingsError("otlp.endpoint: expected an http:// or https:// URL")
    protocol = doc.get("protocol") or "grpc"
    if protocol not in OTLP_PROTOCOLS:
        raise SettingsError(f"otlp.protocol: expected one of {', '.join(OTLP_PROTOCOLS)}")
    key = doc.get("headersSecretKey") or ""
    if not isinstance(key, str) or (key and not _SECRET_KEY.fullmatch(key)):
        raise SettingsError("otlp.headersSecretKey: expected a Secret key name")
    env = doc.get("env") or {}
    if not isinstance(env, dict):
        raise SettingsError("otlp.env: expected a mapping of OTEL_* names to strings")
    for name, value in env.items():
        if not isinstance(name, str) or not _OTEL_NAME.fullmatch(name):
            raise SettingsError(f"otlp.env: {str(name)[:64]!r} is not an OTEL_* variable name")
        if not isinstance(value, str):
            raise SettingsError(f"otlp.env.{name}: expected a string")
    return Otlp(
        endpoint=endpoint,
        protocol=protocol,
        headers_secret_key=key,
        env=tuple(sorted(env.items())),
    )


def parse_settings(doc: Any) -> Settings:
    if doc is None:
        return Settings()
    if not isinstance(doc, dict):
        raise SettingsError("injector settings: expected a mapping")
    d = Settings()
    known = {
        "image", "proxyImage", "imagePullPolicy", "nativeSidecars", "providers", "capture",
        "capturePorts", "listenPort", "readyPort", "proxyUID", "concurrency",
        "drainSeconds", "configMap", "configKey", "secretName", "excludedNamespaces",
        "proxyResources", "extprocResources", "metricsPath", "scrapeAnnotations", "otlp",
    }  # fmt: skip
    if "adminPort" in doc:
        raise SettingsError(
            "adminPort: removed; Envoy's admin API is a Unix socket the app cannot reach"
        )
    unknown = sorted(set(doc) - known)
    if unknown:
        raise SettingsError(f"unknown injector setting(s): {', '.join(unknown)}")

    def get(key: str, default: Any, kind: type | tuple[type, ...]) -> Any:
        value = doc.get(key, default)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
            raise SettingsError(f"{key}: expected {getattr(kind, '__name__', kind)}")
        return value

    providers = tuple(get("providers", list(d.providers), list))
    for p in providers:
        if p not in PROVIDERS:
            raise SettingsError(
                f"providers: unknown provider {p!r} (known: {', '.join(PROVIDERS)})"
            )
    capture = get("capture", d.capture, str)
    if capture not in CAPTURE_MODES:
        raise SettingsError(f"capture: expected one of {', '.join(CAPTURE_MODES)}")
    ports = tuple(get("capturePorts", list(d.capture_ports), list))
    if not ports or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports
    ):
        raise SettingsError("capturePorts: expected a list of TCP ports")
    for key in ("providers", "excludedNamespaces"):
        if not all(isinstance(v, str) for v in doc.get(key) or []):
            raise SettingsError(f"{key}: expected a list of strings")
    for name, value in [(k, get(k, 0, int)) for k in ("listenPort", "readyPort")]:
        if value and not 0 < value < 65536:
            raise SettingsError(f"{name}: {value} is not a port")
    metrics_path = doc.get("metricsPath", d.metrics_path)
    if metrics_path is not None and (
        not isinstance(metrics_path, str) or not _METRICS_PATH.fullmatch(metrics_path)
    ):
        raise SettingsError("metricsPath: expected an absolute URL path, or null for none")
    return Settings(
        metrics_path=metrics_path,
        scrape_annotations=get("scrapeAnnotations", d.scrape_annotations, bool),
        otlp=_otlp(doc.get("otlp")),
        image=get("image", d.image, str),
        proxy_image=get("proxyImage", d.proxy_image, str),
        image_pull_policy=get("imagePullPolicy", d.image_pull_policy, str),
        native_sidecars=get("nativeSidecars", d.native_sidecars, bool),
        providers=providers,
        capture=capture,
        capture_ports=ports,
        listen_port=get("listenPort", d.listen_port, int),
        ready_port=get("readyPort", d.ready_port, int),
        proxy_uid=get("proxyUID", d.proxy_uid, int),
        concurrency=get("concurrency", d.concurrency, int),
        drain_seconds=get("drainSeconds", d.drain_seconds, int),
        config_map=get("configMap", d.config_map, str),
        config_key=get("configKey", d.config_key, str),
        secret_name=get("secretName", d.secret_name, str),
        excluded_namespaces=tuple(get("excludedNamespaces", list(d.excluded_namespaces), list)),
        proxy_resources=_resources(doc.get("proxyResources"), "proxyResources", d.proxy_resources),
        extproc_resources=_resources(
            doc.get("extprocResources"), "extprocResources", d.extproc_resources
        ),
    )


def load_settings(path: str | Path | None) -> Settings:
    if path is None:
        return Settings()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise SettingsError(f"cannot read injector settings {path}: {e.strerror}") from None
    try:
        return parse_settings(yaml.safe_load(text))
    except yaml.YAMLError as e:
        raise SettingsError(f"{path} is not valid YAML: {e}") from None

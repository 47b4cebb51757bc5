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
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


class SettingsError(ValueError):
    pass


def is_quantity(value: str) -> bool:
    return bool(_QUANTITY.match(value))


def is_dns_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.match(value))


def is_dns_subdomain(value: str) -> bool:
    return len(value) <= 253 and bool(_DNS1123_SUBDOMAIN.match(value))


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


def _resources(doc: Any, key: str, default: Resources) -> Resources:
    if doc is None:
        return default
    if not isinstance(doc, dict):
        raise SettingsError(f"{key}: expected a mapping with requests/limits")
    values: dict[str, str | None] = {}
    for part, names in (("requests", ("cpu", "memory")), ("limits", ("cpu", "memory"))):
        section = doc.get(part) or {}
        for name in names:
            value = section.get(name)
            if value is None:
                continue
            if not is_quantity(str(value)):
                raise SettingsError(f"{key}.{part}.{name}: {value!r} is not a Kubernetes quantity")
            field_name = name if part == "requests" else f"{name}_limit"
            values[field_name] = str(value)
    return Resources(**values)


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
        "proxyResources", "extprocResources",
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
    for name, value in [(k, get(k, 0, int)) for k in ("listenPort", "readyPort")]:
        if value and not 0 < value < 65536:
            raise SettingsError(f"{name}: {value} is not a port")
    return Settings(
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

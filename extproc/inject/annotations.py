"""Per-pod options from ``sidegate.io/`` annotations, checked strictly.

An unknown ``sidegate.io/`` key is an error, not ignored: a typo such as
``sidegate.io/provider`` would otherwise silently inject the defaults. Every
problem is reported at once, each naming its annotation.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .settings import (
    CAPTURE_MODES,
    PROVIDERS,
    Resources,
    Settings,
    is_dns_label,
    is_dns_subdomain,
    is_quantity,
)

PREFIX = "sidegate.io/"
STATUS = PREFIX + "status"
INJECT_LABEL = PREFIX + "inject"


class AnnotationError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True, slots=True)
class PodOptions:
    providers: tuple[str, ...]
    containers: tuple[str, ...] | None  # None: every app container
    capture: str
    capture_ports: tuple[int, ...]
    native: bool
    config_map: str
    secret_name: str
    drain_seconds: int
    image: str
    proxy_image: str
    proxy_resources: Resources
    extproc_resources: Resources


_RESOURCE_KEYS = {
    f"{PREFIX}{who}-{what}": (who, field)
    for who in ("proxy", "extproc")
    for what, field in (
        ("cpu", "cpu"),
        ("memory", "memory"),
        ("cpu-limit", "cpu_limit"),
        ("memory-limit", "memory_limit"),
    )
}
KNOWN = {
    STATUS,
    INJECT_LABEL,
    PREFIX + "providers",
    PREFIX + "inject-containers",
    PREFIX + "capture",
    PREFIX + "capture-ports",
    PREFIX + "native-sidecar",
    PREFIX + "config",
    PREFIX + "secret-name",
    PREFIX + "drain-seconds",
    PREFIX + "image",
    PREFIX + "proxy-image",
    *_RESOURCE_KEYS,
}


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_options(annotations: Mapping[str, str], settings: Settings) -> PodOptions:
    problems: list[str] = []
    opts = PodOptions(
        providers=settings.providers,
        containers=None,
        capture=settings.capture,
        capture_ports=settings.capture_ports,
        native=settings.native_sidecars,
        config_map=settings.config_map,
        secret_name=settings.secret_name,
        drain_seconds=settings.drain_seconds,
        image=settings.image,
        proxy_image=settings.proxy_image,
        proxy_resources=settings.proxy_resources,
        extproc_resources=settings.extproc_resources,
    )
    resources = {"proxy": settings.proxy_resources, "extproc": settings.extproc_resources}
    for key, raw in sorted(annotations.items()):
        if not key.startswith(PREFIX):
            continue
        value = str(raw).strip()

        def bad(message: str, key: str = key) -> None:
            problems.append(f"annotation {key}: {message}")

        if key not in KNOWN:
            close = difflib.get_close_matches(key, sorted(KNOWN), n=1)
            bad("unknown sidegate annotation" + (f" (did you mean {close[0]}?)" if close else ""))
        elif key == PREFIX + "providers":
            names = _list(value)
            unknown = [n for n in names if n not in PROVIDERS]
            if unknown or not names:
                bad(
                    f"unknown provider(s) {', '.join(map(repr, unknown))}; expected a comma "
                    f"list of {', '.join(PROVIDERS)}"
                    if unknown
                    else f"expected a comma list of {', '.join(PROVIDERS)}"
                )
            else:
                opts = replace(opts, providers=tuple(dict.fromkeys(names)))
        elif key == PREFIX + "inject-containers":
            names = _list(value)
            if not names:
                bad("expected a comma list of container names")
            opts = replace(opts, containers=tuple(names))
        elif key == PREFIX + "capture":
            if value not in CAPTURE_MODES:
                bad(f"{value!r} is not one of {', '.join(CAPTURE_MODES)}")
            else:
                opts = replace(opts, capture=value)
        elif key == PREFIX + "capture-ports":
            try:
                ports = tuple(int(p) for p in _list(value))
                if not ports or any(not 0 < p < 65536 for p in ports):
                    raise ValueError
                opts = replace(opts, capture_ports=ports)
            except ValueError:
                bad(f"{value!r} is not a comma list of TCP ports")
        elif key == PREFIX + "native-sidecar":
            if value not in ("true", "false"):
                bad(f'{value!r}: expected "true" or "false"')
            else:
                opts = replace(opts, native=value == "true")
        elif key in (PREFIX + "config", PREFIX + "secret-name"):
            if not is_dns_subdomain(value):
                bad(f"{value!r} is not a valid object name")
            elif key.endswith("config"):
                opts = replace(opts, config_map=value)
            else:
                opts = replace(opts, secret_name=value)
        elif key == PREFIX + "drain-seconds":
            if not value.isdigit() or int(value) > 3600:
                bad(f"{value!r}: expected whole seconds between 0 and 3600")
            else:
                opts = replace(opts, drain_seconds=int(value))
        elif key in (PREFIX + "image", PREFIX + "proxy-image"):
            if not value or any(c.isspace() for c in value):
                bad(f"{value!r} is not an image reference")
            elif key.endswith("proxy-image"):
                opts = replace(opts, proxy_image=value)
            else:
                opts = replace(opts, image=value)
        elif key in _RESOURCE_KEYS:
            who, field = _RESOURCE_KEYS[key]
            if not is_quantity(value):
                bad(f"{value!r} is not a Kubernetes quantity (like 100m or 128Mi)")
            else:
                resources[who] = replace(resources[who], **{field: value})
        elif key == INJECT_LABEL and value not in ("true", "false", "enabled", "disabled"):
            bad(f'{value!r}: expected "true" or "false"')
    if problems:
        raise AnnotationError(problems)
    return replace(opts, proxy_resources=resources["proxy"], extproc_resources=resources["extproc"])


def check_container_names(opts: PodOptions, names: list[str]) -> None:
    if opts.containers is None:
        return
    missing = [n for n in opts.containers if n not in names]
    if missing:
        raise AnnotationError(
            [
                f"annotation {PREFIX}inject-containers: no container named "
                f"{', '.join(map(repr, missing))} in this pod (containers: {', '.join(names)})"
            ]
        )


__all__ = ["PREFIX", "STATUS", "AnnotationError", "PodOptions", "is_dns_label", "parse_options"]

"""Per-pod options from ``sidegate.io/`` annotations, checked strictly.

An unknown ``sidegate.io/`` key is an error, not ignored: a typo such as
``sidegate.io/provider`` would otherwise silently inject the defaults. Every
problem is reported at once, each naming its annotation.

The webhook runs before the API server validates the pod, so nothing here is
bounded yet: each value is checked against its length cap before any parsing,
every pattern is linear, and no message quotes more than a short prefix.
"""

from __future__ import annotations

import difflib
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
MAX_KEY = 253 + 1 + 63  # a qualified name: DNS-subdomain prefix, "/", 63-character name
MAX_PROBLEMS = 10  # a pod with hundreds of bad keys gets a readable refusal
_SHOWN = 64  # characters of a bad value quoted back in a message


class AnnotationError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_PROBLEMS]
        if len(problems) > MAX_PROBLEMS:
            shown.append(f"and {len(problems) - MAX_PROBLEMS} more")
        super().__init__("; ".join(shown))


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


# The longest value each annotation can sensibly hold; checked before parsing.
_CAPS: dict[str, int] = {
    STATUS: 32 * 1024,  # written by us: names of our containers, volumes and env per container
    INJECT_LABEL: 16,
    PREFIX + "providers": 256,  # a comma list of the known provider names, with room for spaces
    PREFIX + "inject-containers": 4096,  # 64 container names of 63 characters
    PREFIX + "capture": 16,
    PREFIX + "capture-ports": 256,  # some 40 ports; each one is an iptables rule
    PREFIX + "native-sidecar": 16,
    PREFIX + "config": 253,  # an object name (DNS subdomain)
    PREFIX + "secret-name": 253,
    PREFIX + "drain-seconds": 16,
    # A reference: 255-character name, 128-character tag, sha512 digest, separators.
    PREFIX + "image": 1024,
    PREFIX + "proxy-image": 1024,
    **dict.fromkeys(_RESOURCE_KEYS, 64),  # a quantity (settings.MAX_QUANTITY)
}
MAX_LIST_ITEMS = 64


def show(value: str, limit: int = _SHOWN) -> str:
    """A value for a message: quoted, and cut to ``limit`` characters with its length."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def _list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def checked_annotations(annotations: object) -> dict[str, str]:
    """The pod's ``sidegate.io/`` annotations, each within its cap, or AnnotationError.

    Runs before any value is parsed: a key that is too long, a value that is not
    a string or is longer than its annotation can ever need is refused here.
    """
    if annotations is None:
        return {}
    if not isinstance(annotations, dict):
        raise AnnotationError(["metadata.annotations: expected a map of strings"])
    problems: list[str] = []
    out: dict[str, str] = {}
    for key, value in annotations.items():
        if not isinstance(key, str) or not key.startswith(PREFIX):
            continue
        if len(key) > MAX_KEY:
            problems.append(f"annotation {show(key)}: the key is longer than {MAX_KEY} characters")
        elif not isinstance(value, str):
            problems.append(f"annotation {key}: expected a string, got {type(value).__name__}")
        elif key in _CAPS and len(value) > _CAPS[key]:
            problems.append(
                f"annotation {key}: {len(value)} characters; at most {_CAPS[key]} are allowed"
            )
        else:
            out[key] = value
    if problems:
        raise AnnotationError(problems)
    return out


def parse_options(annotations: object, settings: Settings) -> PodOptions:
    checked = checked_annotations(annotations)
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
    for key, raw in sorted(checked.items()):
        value = raw.strip()

        def bad(message: str, key: str = key) -> None:
            problems.append(f"annotation {key}: {message}")

        if key not in KNOWN:
            # difflib is quadratic in the key's length: the key is capped above.
            close = difflib.get_close_matches(key, sorted(KNOWN), n=1)
            bad("unknown sidegate annotation" + (f" (did you mean {close[0]}?)" if close else ""))
        elif key == PREFIX + "providers":
            names = _list(value)
            unknown = [n for n in names if n not in PROVIDERS]
            if unknown or not names:
                bad(
                    f"unknown provider(s) {', '.join(map(show, unknown[:5]))}; expected a comma "
                    f"list of {', '.join(PROVIDERS)}"
                    if unknown
                    else f"expected a comma list of {', '.join(PROVIDERS)}"
                )
            else:
                opts = replace(opts, providers=tuple(dict.fromkeys(names)))
        elif key == PREFIX + "inject-containers":
            names = _list(value)
            invalid = [n for n in names if not is_dns_label(n)]
            if not names or len(names) > MAX_LIST_ITEMS:
                bad(f"expected a comma list of 1 to {MAX_LIST_ITEMS} container names")
            elif invalid:
                bad(f"{show(invalid[0])} is not a container name (a DNS label)")
            else:
                opts = replace(opts, containers=tuple(dict.fromkeys(names)))
        elif key == PREFIX + "capture":
            if value not in CAPTURE_MODES:
                bad(f"{show(value)} is not one of {', '.join(CAPTURE_MODES)}")
            else:
                opts = replace(opts, capture=value)
        elif key == PREFIX + "capture-ports":
            items = _list(value)
            if items and all(p.isascii() and p.isdigit() and 0 < int(p) < 65536 for p in items):
                opts = replace(opts, capture_ports=tuple(dict.fromkeys(int(p) for p in items)))
            else:
                bad(f"{show(value)} is not a comma list of TCP ports")
        elif key == PREFIX + "native-sidecar":
            if value not in ("true", "false"):
                bad(f'{show(value)}: expected "true" or "false"')
            else:
                opts = replace(opts, native=value == "true")
        elif key in (PREFIX + "config", PREFIX + "secret-name"):
            if not is_dns_subdomain(value):
                bad(f"{show(value)} is not a valid object name")
            elif key.endswith("config"):
                opts = replace(opts, config_map=value)
            else:
                opts = replace(opts, secret_name=value)
        elif key == PREFIX + "drain-seconds":
            if not (value.isascii() and value.isdigit()) or int(value) > 3600:
                bad(f"{show(value)}: expected whole seconds between 0 and 3600")
            else:
                opts = replace(opts, drain_seconds=int(value))
        elif key in (PREFIX + "image", PREFIX + "proxy-image"):
            if not value or any(c.isspace() for c in value):
                bad(f"{show(value)} is not an image reference")
            elif key.endswith("proxy-image"):
                opts = replace(opts, proxy_image=value)
            else:
                opts = replace(opts, image=value)
        elif key in _RESOURCE_KEYS:
            who, field = _RESOURCE_KEYS[key]
            if not is_quantity(value):
                bad(f"{show(value)} is not a Kubernetes quantity (like 100m or 128Mi)")
            else:
                resources[who] = replace(resources[who], **{field: value})
        elif key == INJECT_LABEL and value not in ("true", "false", "enabled", "disabled"):
            bad(f'{show(value)}: expected "true" or "false"')
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
                f"{', '.join(map(show, missing[:5]))} in this pod "
                f"(containers: {', '.join(n[:63] for n in names[:10])})"
            ]
        )


__all__ = ["PREFIX", "STATUS", "AnnotationError", "PodOptions", "is_dns_label", "parse_options"]

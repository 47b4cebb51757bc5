"""The gateway config: one YAML file, validated into typed, immutable objects.

Every error names the offending field by its path (``providers.openai.base_url``)
and says what was expected, so a platform team can fix a config from the message
alone. Nothing here touches the network or reads secrets; see ``keys`` for that.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from . import forwarding
from .audit.config import AuditConfig, parse_audit_config
from .model_names import ModelNames, parse_model_names
from .quota.config import QuotaConfig, parse_quota_config
from .telemetry.config import TelemetryConfig, parse_telemetry_config


class ConfigError(ValueError):
    """A config that cannot serve. ``path`` is the dotted path of the bad field."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class ProviderApi(enum.StrEnum):
    """The wire format a provider speaks. New APIs (gemini, bedrock, azure) slot in here."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class ResponsesSupport(enum.StrEnum):
    """How an OpenAI-style provider answers the Responses API (``POST /v1/responses``)."""

    NATIVE = "native"  # it serves /responses itself: requests pass through, state included
    CHAT = "chat"  # chat completions only: the stateless subset is translated


# The host whose provider serves the Responses API when the config does not say.
OPENAI_API_HOST = "api.openai.com"


class StructuredOutputs(enum.StrEnum):
    """How an Anthropic model is asked for JSON that follows a schema.

    ``native``: Anthropic's own parameter (``output_config.format``), on the
    models that have it (Claude Haiku 4.5, Sonnet 4.5 and later, Opus 4.5 and
    later). ``tool``: a forced tool whose input is the schema, which every
    model with tools serves; the tool's input becomes the message content.
    """

    NATIVE = "native"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class KeySource:
    env: str | None = None
    file: str | None = None

    def describe(self) -> str:
        return f"env {self.env}" if self.env else f"file {self.file}"


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    api: ProviderApi
    base_url: str
    scheme: str
    host: str
    port: int
    base_path: str  # "/v1" for https://api.openai.com/v1, "" for https://api.anthropic.com
    keys: tuple[KeySource, ...]
    region: str | None = None
    anthropic_version: str = "2023-06-01"
    ca_file: str | None = None  # trust store for TLS origination; system bundle when unset
    # OpenAI-style providers only: whether /v1/responses passes through or is translated.
    responses: ResponsesSupport = ResponsesSupport.CHAT

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def cluster(self) -> str:
        return f"provider_{self.name}"


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    provider: str
    id: str
    price: Price = field(default_factory=Price)
    context_window: int | None = None
    embeddings: bool = False  # an embedding model, served on /v1/embeddings only
    # How an Anthropic model answers an OpenAI response_format json_schema.
    structured_outputs: StructuredOutputs = StructuredOutputs.TOOL
    # An OpenAI-style model that takes reasoning_effort: an Anthropic client's
    # `thinking` becomes one (other models answer without extended thinking).
    reasoning: bool = False
    # The most output tokens the model gives: a larger max_tokens is lowered to
    # it where sidegate translates the request (Claude Code asks 32,000 of any model).
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    model: str
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Route:
    """A name clients ask for, and the ordered groups Envoy fails over between.

    Attempt N goes to group ``(N - 1) % len(groups)`` (Envoy's priority-group
    cluster specifier), so a provider may appear once per group: the provider
    stage then knows which model id an attempt stands for from the group and
    the cluster alone.
    """

    name: str
    groups: tuple[tuple[Candidate, ...], ...]
    retries: int


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    # An attempt whose response has not started after this long fails over to
    # the next group. Once the response has started it no longer applies.
    first_byte: float = 60.0
    # Silence allowed on a request, in either direction: between two chunks of
    # a streamed response as the client sees them, or of an uploaded body.
    stream_idle: float = 300.0
    # A client must send its request headers within this long of their first
    # byte (an idle connection before it is bounded by connection_idle).
    request_headers: float = 10.0
    # A client must send its whole request, headers and body, within this long.
    request: float = 60.0
    # A client connection with no request under way is closed after this long.
    # request_headers starts at a request's first byte, so this alone bounds a
    # connection that never sends one: left at Envoy's hour, a pile of them
    # held every max_connections slot and new connections were refused.
    connection_idle: float = 60.0
    retry_base: float = 0.25
    retry_max: float = 2.0
    # Retry-After values above this are ignored by Envoy (the back-off applies).
    retry_after_max: float = 30.0


@dataclass(frozen=True, slots=True)
class Listen:
    address: str = "127.0.0.1"
    port: int = 14000


# What the ext_proc path can carry in one message: Envoy buffers up to this for
# a stream to the processor, and the processor's gRPC cap is above it. The
# request body travels whole (BUFFERED) to both stages, so it must fit with
# room for headers, attributes and the provider stage's translation.
EXTPROC_MESSAGE_BYTES = 32 * 1024 * 1024
BODY_HEADROOM_BYTES = 1024 * 1024
MAX_BODY_CEILING = EXTPROC_MESSAGE_BYTES - BODY_HEADROOM_BYTES


@dataclass(frozen=True, slots=True)
class Limits:
    # The one size setting: Envoy's buffers (listener, route, retries) are
    # derived from it, and a bigger body is refused in the caller's format.
    max_request_body_bytes: int = 16 * 1024 * 1024
    max_request_headers_kb: int = 96
    # Downstream connections the listener holds at once; more are closed.
    max_connections: int = 2048
    # Concurrent streams per HTTP/2 client connection.
    max_streams_per_connection: int = 128
    # The most sidegate holds of one provider response: one SSE event it
    # translates, or an error or JSON body it rewrites whole.
    max_response_bytes: int = 16 * 1024 * 1024
    # How far Envoy may run ahead of an app that reads slower than its
    # provider sends (the app connection's buffer limit). Envoy 1.40 crashes
    # when it must pause such a response after the provider finished, so this
    # sits above any response an app should get.
    client_buffer_bytes: int = 256 * 1024 * 1024

    @property
    def body_buffer_bytes(self) -> int:
        """What Envoy may buffer for one request: the body limit plus headroom."""
        return self.max_request_body_bytes + BODY_HEADROOM_BYTES


@dataclass(frozen=True, slots=True)
class CircuitBreakers:
    """Per-provider limits, sized for one pod's traffic rather than Envoy's defaults.

    Envoy's default of 3 concurrent retries per cluster turns failover off under
    load; a retry budget scales with the requests in flight instead.
    """

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    # Retries in flight may be this share of the requests in flight to the
    # provider a request started on...
    retry_budget_percent: float = 100.0
    # ...but never fewer than this many, so a quiet sidecar can still fail over.
    min_retry_concurrency: int = 32


@dataclass(frozen=True, slots=True)
class Defaults:
    # Anthropic requires max_tokens; OpenAI clients often leave it out.
    anthropic_max_tokens: int = 4096
    # Output tokens quota admission reserves for a request that sets no max_tokens.
    reserve_output_tokens: int = 4096


@dataclass(frozen=True, slots=True)
class EnvoyOptions:
    concurrency: int = 2
    log_level: str = "warning"
    access_log: bool = True


@dataclass(frozen=True, slots=True)
class ForwardHeaders:
    """The app's headers that reach providers beyond the built-in classes (see ``forwarding``)."""

    allow: tuple[str, ...] = ()  # names, or prefixes ending in "*"
    deny: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    providers: Mapping[str, Provider]
    models: Mapping[str, Model]
    routes: Mapping[str, Route]
    listen: Listen = field(default_factory=Listen)
    limits: Limits = field(default_factory=Limits)
    defaults: Defaults = field(default_factory=Defaults)
    timeouts: Timeouts = field(default_factory=Timeouts)
    circuit_breakers: CircuitBreakers = field(default_factory=CircuitBreakers)
    envoy: EnvoyOptions = field(default_factory=EnvoyOptions)
    extproc_socket: str | None = None
    quota: QuotaConfig = field(default_factory=QuotaConfig)
    forward_headers: ForwardHeaders = field(default_factory=ForwardHeaders)
    audit: AuditConfig = field(default_factory=AuditConfig)
    model_names: ModelNames = field(default_factory=lambda: ModelNames({}, ()))
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)

    def route_for(self, name: str) -> Route | None:
        return self.routes.get(name)

    def candidates(self, route: Route) -> list[tuple[Model, Provider]]:
        seen: list[tuple[Model, Provider]] = []
        for group in route.groups:
            for c in group:
                m = self.models[c.model]
                seen.append((m, self.providers[m.provider]))
        return seen


# --- loading -----------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _type_name(value: object) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)


class Reader:
    """Walks a parsed YAML document, keeping the dotted path for error messages."""

    def __init__(self, value: Any, path: str = "") -> None:
        self.value = value
        self.path = path

    def child(self, key: str | int) -> Reader:
        if isinstance(key, int):
            return Reader(self.value[key], f"{self.path}[{key}]")
        value = self.value.get(key) if isinstance(self.value, dict) else None
        return Reader(value, f"{self.path}.{key}" if self.path else key)

    def fail(self, message: str) -> ConfigError:
        return ConfigError(self.path, message)

    def mapping(
        self, allowed: Sequence[str] | None = None, *, optional: bool = False
    ) -> dict[str, Any]:
        if self.value is None and optional:
            return {}
        if not isinstance(self.value, dict):
            raise self.fail(f"expected a mapping, got {_type_name(self.value)}")
        for key in self.value:
            if not isinstance(key, str):
                raise self.fail(f"keys must be strings, got {key!r}")
            if allowed is not None and key not in allowed:
                raise self.child(key).fail(
                    f"unknown field; expected one of: {', '.join(sorted(allowed))}"
                )
        return self.value

    def list(self) -> list[Any]:
        if not isinstance(self.value, list):
            raise self.fail(f"expected a list, got {_type_name(self.value)}")
        return self.value

    def elements(self) -> tuple[Reader, ...]:
        """A reader per element of an optional list (none when the field is absent)."""
        if self.value is None:
            return ()
        return tuple(self.child(i) for i in range(len(self.list())))

    def string(self, default: str | None = None) -> str:
        if self.value is None and default is not None:
            return default
        if not isinstance(self.value, str) or not self.value:
            raise self.fail(f"expected a non-empty string, got {_type_name(self.value)}")
        return self.value

    def opt_string(self) -> str | None:
        return None if self.value is None else self.string()

    def integer(self, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        if self.value is None:
            return default
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.fail(f"expected an integer, got {_type_name(self.value)}")
        if self.value < minimum or (maximum is not None and self.value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise self.fail(f"expected an integer {bound}, got {self.value}")
        return self.value

    def number(self, default: float, *, minimum: float = 0.0) -> float:
        if self.value is None:
            return default
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise self.fail(f"expected a number, got {_type_name(self.value)}")
        if not math.isfinite(self.value) or self.value < minimum:
            raise self.fail(f"expected a number >= {minimum}, got {self.value}")
        return float(self.value)

    def boolean(self, default: bool) -> bool:
        if self.value is None:
            return default
        if not isinstance(self.value, bool):
            raise self.fail(f"expected true or false, got {_type_name(self.value)}")
        return self.value

    def duration(self, default: float) -> float:
        """Seconds, from ``250ms``, ``5s``, ``2m``, ``1h`` or a bare number of seconds."""
        if self.value is None:
            return default
        if isinstance(self.value, int | float) and not isinstance(self.value, bool):
            seconds = float(self.value)
        elif isinstance(self.value, str) and (m := _DURATION.match(self.value.strip())):
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        else:
            raise self.fail(f"expected a duration such as 250ms, 5s or 2m, got {self.value!r}")
        if seconds <= 0:
            raise self.fail(f"expected a positive duration, got {self.value!r}")
        return seconds


def _parse_key(r: Reader) -> KeySource:
    m = r.mapping(["env", "file"])
    if ("env" in m) == ("file" in m):
        raise r.fail("expected exactly one of 'env' (a variable name) or 'file' (a path)")
    if "env" in m:
        name = r.child("env").string()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise r.child("env").fail(f"not an environment variable name: {name!r}")
        return KeySource(env=name)
    return KeySource(file=r.child("file").string())


_PROVIDER_FIELDS = [
    "api",
    "base_url",
    "keys",
    "region",
    "anthropic_version",
    "ca_file",
    "responses",
]


def _parse_responses(r: Reader, api: ProviderApi, host: str) -> ResponsesSupport:
    if r.value is None:
        # OpenAI itself serves the Responses API; OpenAI-compatible servers
        # (vLLM, Ollama, Groq, ...) reliably serve chat completions only.
        native = api is ProviderApi.OPENAI and host == OPENAI_API_HOST
        return ResponsesSupport.NATIVE if native else ResponsesSupport.CHAT
    if api is not ProviderApi.OPENAI:
        raise r.fail("only OpenAI-style providers (api: openai) take this field")
    value = r.string()
    try:
        return ResponsesSupport(value)
    except ValueError:
        known = ", ".join(s.value for s in ResponsesSupport)
        raise r.fail(f"expected one of: {known}; got {value!r}") from None


def _parse_provider(name: str, r: Reader) -> Provider:
    if not _NAME.match(name):
        raise r.fail("provider names are lowercase letters, digits, '.', '_' and '-' (max 63)")
    r.mapping(_PROVIDER_FIELDS)
    api_r = r.child("api")
    api_s = api_r.string()
    try:
        api = ProviderApi(api_s)
    except ValueError:
        known = ", ".join(a.value for a in ProviderApi)
        raise api_r.fail(f"unknown provider API {api_s!r}; expected one of: {known}") from None
    url_r = r.child("base_url")
    url = url_r.string().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise url_r.fail(f"expected an http:// or https:// URL with a host, got {url!r}")
    if parts.query or parts.fragment or parts.username:
        raise url_r.fail("a base URL carries no query, fragment or credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise url_r.fail(f"bad port in {url!r}") from None
    keys_r = r.child("keys")
    keys = tuple(_parse_key(keys_r.child(i)) for i in range(len(keys_r.list())))
    if not keys:
        raise keys_r.fail("expected at least one key source")
    return Provider(
        name=name,
        api=api,
        base_url=url,
        scheme=parts.scheme,
        host=parts.hostname,
        port=port,
        base_path=parts.path.rstrip("/"),
        keys=keys,
        region=r.child("region").opt_string(),
        anthropic_version=r.child("anthropic_version").string("2023-06-01"),
        ca_file=r.child("ca_file").opt_string(),
        responses=_parse_responses(r.child("responses"), api, parts.hostname),
    )


def _parse_model(name: str, r: Reader, providers: Mapping[str, Provider]) -> Model:
    if not _MODEL_NAME.match(name):
        raise r.fail("model names are letters, digits and . _ : / @ + - (max 128)")
    r.mapping(
        [
            "provider",
            "id",
            "price",
            "context_window",
            "embeddings",
            "structured_outputs",
            "reasoning",
            "max_output_tokens",
        ]
    )
    prov_r = r.child("provider")
    provider = prov_r.string()
    if provider not in providers:
        raise prov_r.fail(
            f"no provider named {provider!r}; defined: {', '.join(sorted(providers)) or 'none'}"
        )
    price_r = r.child("price")
    price_r.mapping(["input_per_mtok", "output_per_mtok"], optional=True)
    price = Price(
        input_per_mtok=price_r.child("input_per_mtok").number(0.0),
        output_per_mtok=price_r.child("output_per_mtok").number(0.0),
    )
    cw = r.child("context_window")
    embeddings = r.child("embeddings").boolean(False)
    emb_r = r.child("embeddings")
    if embeddings and providers[provider].api is not ProviderApi.OPENAI:
        raise emb_r.fail("embedding models are served by OpenAI-style providers only")
    structured = _parse_structured_outputs(r.child("structured_outputs"), providers[provider])
    mo = r.child("max_output_tokens")
    reasoning_r = r.child("reasoning")
    reasoning = reasoning_r.boolean(False)
    if reasoning and providers[provider].api is not ProviderApi.OPENAI:
        raise reasoning_r.fail(
            "only OpenAI-style models take reasoning_effort; Anthropic models take thinking as is"
        )
    return Model(
        name=name,
        provider=provider,
        id=r.child("id").string(name),
        price=price,
        context_window=None if cw.value is None else cw.integer(0, minimum=1),
        embeddings=embeddings,
        structured_outputs=structured,
        reasoning=reasoning,
        max_output_tokens=None if mo.value is None else mo.integer(0, minimum=1),
    )


def _parse_structured_outputs(r: Reader, provider: Provider) -> StructuredOutputs:
    if r.value is None:
        return StructuredOutputs.TOOL
    if provider.api is not ProviderApi.ANTHROPIC:
        raise r.fail("applies to models of Anthropic providers only")
    value = r.string()
    try:
        return StructuredOutputs(value)
    except ValueError:
        known = ", ".join(m.value for m in StructuredOutputs)
        raise r.fail(f"expected one of: {known}; got {value!r}") from None


def _parse_candidate(r: Reader, models: Mapping[str, Model]) -> Candidate:
    if isinstance(r.value, str):
        name, weight = r.value, 1
    else:
        r.mapping(["model", "weight"])
        name = r.child("model").string()
        weight = r.child("weight").integer(1, minimum=1, maximum=1000)
        r = r.child("model")
    if name not in models:
        raise r.fail(f"no model named {name!r}; defined: {', '.join(sorted(models)) or 'none'}")
    return Candidate(model=name, weight=weight)


def _parse_group(r: Reader, models: Mapping[str, Model]) -> tuple[Candidate, ...]:
    # A group is one model, or a list of models Envoy splits one attempt between.
    if isinstance(r.value, list):
        group = tuple(_parse_candidate(r.child(i), models) for i in range(len(r.value)))
    else:
        group = (_parse_candidate(r, models),)
    if not group:
        raise r.fail("a group needs at least one model")
    providers = [models[c.model].provider for c in group]
    dup = next((p for p in providers if providers.count(p) > 1), None)
    if dup:
        raise r.fail(
            f"provider {dup!r} appears twice in one group; Envoy picks one cluster per "
            "provider, so put the second model in a later group"
        )
    return group


def _parse_route(name: str, r: Reader, models: Mapping[str, Model]) -> Route:
    if not _MODEL_NAME.match(name):
        raise r.fail("route names are letters, digits and . _ : / @ + - (max 128)")
    # Short form: the route is just its list of groups.
    if isinstance(r.value, list):
        groups_r, retries_r = r, Reader(None, f"{r.path}.retries")
    else:
        r.mapping(["groups", "retries"])
        groups_r, retries_r = r.child("groups"), r.child("retries")
    groups = tuple(_parse_group(groups_r.child(i), models) for i in range(len(groups_r.list())))
    if not groups:
        raise groups_r.fail("a route needs at least one group")
    if len({models[c.model].embeddings for g in groups for c in g}) > 1:
        raise groups_r.fail("a route mixes embedding and chat models")
    retries = retries_r.integer(max(1, len(groups) - 1), minimum=0, maximum=10)
    return Route(name=name, groups=groups, retries=retries)


_TOP_FIELDS = [
    "providers",
    "models",
    "routes",
    "listen",
    "limits",
    "defaults",
    "timeouts",
    "circuit_breakers",
    "envoy",
    "extproc",
    "quotas",
    "identity",
    "state",
    "tokenizer",
    "forward_headers",
    "audit",
    "model_names",
    "telemetry",
]


def _parse_forward_headers(root: Reader) -> ForwardHeaders:
    r = root.child("forward_headers")
    r.mapping(["allow", "deny"], optional=True)
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("allow", "deny"):
        patterns: list[str] = []
        for item in r.child(key).elements():
            pattern = item.string().lower()
            if not forwarding.PATTERN.match(pattern):
                raise item.fail(
                    f"expected a header name or a prefix ending in '*', got {pattern!r}"
                )
            if key == "allow" and (why := forwarding.never_reason(pattern)):
                raise item.fail(f"{pattern!r} is never forwarded: {why}")
            if key == "deny" and pattern in forwarding.FRAMING:
                raise item.fail(f"{pattern!r} is always forwarded: sidegate and Envoy need it")
            patterns.append(pattern)
        lists[key] = tuple(patterns)
    return ForwardHeaders(allow=lists["allow"], deny=lists["deny"])


def parse_config(doc: Any) -> GatewayConfig:
    root = Reader(doc)
    root.mapping(_TOP_FIELDS)

    prov_r = root.child("providers")
    providers = {n: _parse_provider(n, prov_r.child(n)) for n in prov_r.mapping()}
    if not providers:
        raise prov_r.fail("define at least one provider")

    models_r = root.child("models")
    models = {n: _parse_model(n, models_r.child(n), providers) for n in models_r.mapping()}
    if not models:
        raise models_r.fail("define at least one model")

    routes_r = root.child("routes")
    routes = {
        n: _parse_route(n, routes_r.child(n), models) for n in routes_r.mapping(optional=True)
    }
    # Every model is also reachable by its own name, as a route of one group,
    # unless a route of that name says otherwise.
    for name in models:
        routes.setdefault(name, Route(name=name, groups=((Candidate(name),),), retries=1))

    listen_r = root.child("listen")
    listen_doc = doc.get("listen") if isinstance(doc, dict) else None
    if isinstance(listen_doc, dict) and "admin_port" in listen_doc:
        raise listen_r.child("admin_port").fail(
            "removed: Envoy's admin API is a Unix socket in sidegate's run dir, "
            "never a TCP port (the app could reach a port; see README, Security model)"
        )
    listen_r.mapping(["address", "port"], optional=True)
    address = listen_r.child("address").string("127.0.0.1")
    listen = Listen(
        address=address,
        port=listen_r.child("port").integer(14000, minimum=1, maximum=65535),
    )

    limits = _parse_limits(root.child("limits"))

    defaults_r = root.child("defaults")
    defaults_r.mapping(["anthropic_max_tokens", "reserve_output_tokens"], optional=True)
    defaults = Defaults(
        anthropic_max_tokens=defaults_r.child("anthropic_max_tokens").integer(4096, minimum=1),
        reserve_output_tokens=defaults_r.child("reserve_output_tokens").integer(4096, minimum=0),
    )

    timeouts = _parse_timeouts(root.child("timeouts"))
    circuit_breakers = _parse_circuit_breakers(root.child("circuit_breakers"))

    e_r = root.child("envoy")
    e_r.mapping(["concurrency", "log_level", "access_log"], optional=True)
    log_level = e_r.child("log_level").string("warning")
    levels = ("info", "warning", "error", "critical", "off")
    if log_level in ("trace", "debug"):
        # Envoy's http, router and codec loggers print whole header maps at
        # debug, the provider keys sidegate injects included.
        raise e_r.child("log_level").fail(
            f"{log_level} prints request headers, provider keys included; "
            f"expected one of: {', '.join(levels)}"
        )
    if log_level not in levels:
        raise e_r.child("log_level").fail(f"expected one of: {', '.join(levels)}")
    envoy = EnvoyOptions(
        concurrency=e_r.child("concurrency").integer(2, minimum=1, maximum=64),
        log_level=log_level,
        access_log=e_r.child("access_log").boolean(True),
    )

    x_r = root.child("extproc")
    x_r.mapping(["socket"], optional=True)
    return GatewayConfig(
        providers=providers,
        models=models,
        routes=routes,
        listen=listen,
        limits=limits,
        defaults=defaults,
        timeouts=timeouts,
        circuit_breakers=circuit_breakers,
        envoy=envoy,
        extproc_socket=x_r.child("socket").opt_string(),
        quota=parse_quota_config(root, routes, _parse_key),
        forward_headers=_parse_forward_headers(root),
        audit=parse_audit_config(root, routes),
        model_names=parse_model_names(root, routes),
        telemetry=parse_telemetry_config(root, routes),
    )



def _parse_limits(r: Reader) -> Limits:
    d = Limits()
    r.mapping(
        [
            "max_request_body_bytes",
            "max_request_headers_kb",
            "max_connections",
            "max_streams_per_connection",
            "max_response_bytes",
            "client_buffer_bytes",
        ],
        optional=True,
    )
    body_r = r.child("max_request_body_bytes")
    body = body_r.integer(d.max_request_body_bytes, minimum=1024)
    if body > MAX_BODY_CEILING:
        raise body_r.fail(
            f"{body} bytes is more than the gateway can carry: a body travels whole to the "
            f"ext_proc service in one message of at most {EXTPROC_MESSAGE_BYTES} bytes, so the "
            f"largest limit is {MAX_BODY_CEILING} bytes"
        )
    max_response = r.child("max_response_bytes").integer(
        d.max_response_bytes, minimum=65536, maximum=256 << 20
    )
    return Limits(
        max_request_body_bytes=body,
        # Envoy accepts 1-8192 KiB of request headers.
        max_request_headers_kb=r.child("max_request_headers_kb").integer(
            d.max_request_headers_kb, minimum=8, maximum=8192
        ),
        max_connections=r.child("max_connections").integer(
            d.max_connections, minimum=1, maximum=1_000_000
        ),
        max_streams_per_connection=r.child("max_streams_per_connection").integer(
            d.max_streams_per_connection, minimum=1, maximum=2_147_483_647
        ),
        max_response_bytes=max_response,
        # Above the largest event sidegate holds: one is handed back in a burst.
        client_buffer_bytes=r.child("client_buffer_bytes").integer(
            max(d.client_buffer_bytes, max_response + (1 << 20)),
            minimum=max_response + (1 << 20),
            maximum=(1 << 32) - 1,
        ),
    )


_TIMEOUT_FIELDS = [
    "connect",
    "first_byte",
    "stream_idle",
    "request_headers",
    "request",
    "connection_idle",
    "retry_base",
    "retry_max",
    "retry_after_max",
]


def _parse_timeouts(r: Reader) -> Timeouts:
    r.mapping(_TIMEOUT_FIELDS, optional=True)
    d = Timeouts()
    timeouts = Timeouts(**{f: r.child(f).duration(getattr(d, f)) for f in _TIMEOUT_FIELDS})
    if timeouts.retry_max < timeouts.retry_base:
        raise r.child("retry_max").fail("must be at least retry_base")
    return timeouts


def _parse_circuit_breakers(r: Reader) -> CircuitBreakers:
    d = CircuitBreakers()
    r.mapping(
        [
            "max_connections",
            "max_pending_requests",
            "max_requests",
            "retry_budget_percent",
            "min_retry_concurrency",
        ],
        optional=True,
    )
    budget_r = r.child("retry_budget_percent")
    budget = budget_r.number(d.retry_budget_percent)
    if budget > 100.0:
        raise budget_r.fail(f"expected a percentage between 0 and 100, got {budget_r.value}")
    return CircuitBreakers(
        max_connections=r.child("max_connections").integer(d.max_connections, minimum=1),
        max_pending_requests=r.child("max_pending_requests").integer(
            d.max_pending_requests, minimum=1
        ),
        max_requests=r.child("max_requests").integer(d.max_requests, minimum=1),
        retry_budget_percent=budget,
        min_retry_concurrency=r.child("min_retry_concurrency").integer(
            d.min_retry_concurrency, minimum=1
        ),
    )


def load_config(path: str | Path) -> GatewayConfig:
    p = Path(path)
    try:
        text = p.read_bytes()
    except OSError as e:
        raise ConfigError("", f"cannot read config file {p}: {e.strerror}") from None
    return parse_config_text(text, str(p))


def parse_config_text(text: str | bytes, source: str) -> GatewayConfig:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError("", f"{source} is not valid YAML{where}: {problem}") from None
    return parse_config(doc)

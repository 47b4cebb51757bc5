"""The Envoy bootstrap, generated from the gateway config (never written by hand).

Shape (see DESIGN.md): one loopback listener whose HTTP filter chain is the
body limit, the policy-stage ext_proc, a buffer that holds the headers until
the policy stage has routed the request, then the router; one route per
(route, client API) plan, selected by the dynamic metadata the policy stage
sets, failing over between priority groups; one cluster per provider whose
upstream filter chain runs the provider-stage ext_proc once per attempt. A
request the policy stage did not route hits an entry or catch-all route that
refuses it, so traffic never bypasses the policy.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import PurePath
from typing import Any

import yaml

from .. import forwarding, model_list, model_list_anthropic, pipeline
from ..apis import ClientApi, ErrorStyle
from ..config import EXTPROC_MESSAGE_BYTES, GatewayConfig, Limits, Provider
from ..endpoints import proxy_paths
from ..errors import GatewayError, render
from ..pipeline.count_tokens import TOKEN_COUNT_HEADER
from ..quota.config import Identity
from ..routing import RoutePlan, plan_routes
from ..stages.policy import (
    METADATA_NAMESPACE,
    REQUEST_ID,
    REQUEST_ID_KEY,
    ROUTE_HEADER,
    ROUTE_KEY,
    SLOW_WORK_TIMEOUT,
    PolicyStream,
    attributes,
)
from ..stages.provider import ProviderStream
from ..stages.server import STAGE_METADATA
from .local_reply import local_reply_config

EXTPROC_CLUSTER = "sidegate_extproc"
EXTPROC_MAX_STREAMS = 100_000
APP_LISTENER = "app"
ADMIN_SOCKET = "envoy-admin.sock"
ADMIN_SOCKET_MODE = 0o600
# Envoy checks the ext_proc with grpc.health.v1 this often; readiness follows.
EXTPROC_HEALTH_INTERVAL = 1.0
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
RETRIABLE_STATUS = [429, 500, 502, 503, 504, 529]
_UNROUTED = json.dumps(
    {
        "error": {
            "message": "sidegate: the policy stage did not route this request",
            "type": "server_error",
            "param": None,
            "code": "unrouted",
        }
    }
)

_T = "@type"
_API = "type.googleapis.com/envoy"


def _secs(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def message_timeout(limits: Limits) -> float:
    """How long Envoy waits for each processor reply.

    A stage parses (and the provider stage translates) a whole body within
    one reply: the request, or a response event or JSON body it holds up to
    ``max_response_bytes``. So the wait grows with the larger of the two:
    0.5 s plus 1 s per 16 MiB. A fixed 0.5 s turned a 15 MiB request into a 504.
    """
    largest = max(limits.max_request_body_bytes, limits.max_response_bytes)
    return 0.5 + largest / (16 * 1024 * 1024)


def _extproc(stage: str, mode: dict[str, str], limits: Limits, **extra: Any) -> dict[str, Any]:
    return {
        _T: f"{_API}.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {
            "envoy_grpc": {"cluster_name": EXTPROC_CLUSTER},
            "initial_metadata": [{"key": STAGE_METADATA, "value": stage}],
        },
        "failure_mode_allow": False,
        # The ext_proc is down or failed the stream: the caller may retry (and
        # the local reply mapper writes it in the caller's format).
        "status_on_error": {"code": 503},
        "message_timeout": _secs(message_timeout(limits)),
        "max_message_timeout": _secs(SLOW_WORK_TIMEOUT),
        "processing_mode": mode,
        **extra,
    }


def _body_limit_filter(limits: Limits) -> dict[str, Any]:
    """Refuse a request body over the limit before the policy stage buffers it.

    The app connection's buffer limit cannot bound request bodies: it is also
    the response's write buffer, kept large so that Envoy 1.40 never has to
    pause a response that outruns a slow app (see ``app_listener``). Without
    this filter a body past the limit would travel to the ext_proc service in
    one message larger than gRPC carries.
    """
    return {
        "name": "envoy.filters.http.buffer",
        "typed_config": {
            _T: f"{_API}.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": limits.body_buffer_bytes,
        },
    }


def _policy_filter(identity: Identity, limits: Limits) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": _extproc(
            "policy",
            pipeline.policy_mode(PolicyStream.steps),
            limits,
            # The headers the steps read, sent with the body (no headers message).
            request_attributes=attributes(identity),
            metadata_options={"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}},
            route_cache_action="DEFAULT",
            # Where the headers are sent (paths the stage refuses or answers):
            # never the credentials.
            forward_rules={
                "disallowed_headers": {
                    "patterns": [{"exact": h} for h in sorted(forwarding.CREDENTIALS)]
                }
            },
        ),
    }


def _hold_filter(limits: Limits) -> dict[str, Any]:
    """Holds the request headers until the policy stage's body reply has routed them.

    The policy stage skips the headers, so without this the router would
    pick the route at header time, before the reply that names it.
    """
    return {
        "name": "sidegate.hold_until_routed",
        "typed_config": {
            _T: f"{_API}.extensions.filters.http.buffer.v3.Buffer",
            "max_request_bytes": limits.body_buffer_bytes,
        },
    }


def _provider_filter(provider: Provider, limits: Limits) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": _extproc(
            f"provider:{provider.name}",
            # The stage's own needs and the completion listeners' (the usage).
            pipeline.provider_mode(ProviderStream.needs | pipeline.needs(pipeline.COMPLETION)),
            limits,
            request_attributes=["upstream.request_attempt_count"],
            # allow_envoy: Envoy drops the x-envoy-* headers it knows from a
            # client, not others (x-envoy-foo reached providers): the stage
            # removes them with the rest the allow-list does not forward.
            mutation_rules={"disallow_is_error": True, "allow_envoy": True},
            # Every header: the stage applies the forwarding allow-list to the
            # request's, and scrubs keys from the response's (a provider or a
            # proxy before it may echo one).
        ),
    }


def _route(plan: RoutePlan, config: GatewayConfig) -> dict[str, Any]:
    t = config.timeouts
    groups = [
        {
            "name": f"group{i}",
            "clusters": [
                {
                    "cluster_name": config.providers[config.models[c.model].provider].cluster,
                    "weight": c.weight,
                }
                for c in group
            ],
        }
        for i, group in enumerate(plan.groups)
    ]
    return {
        "name": plan.key,
        # Only the policy stage's reply sets this metadata: a client cannot.
        "match": {
            "prefix": "/",
            "dynamic_metadata": [
                {
                    "filter": METADATA_NAMESPACE,
                    "path": [{"key": ROUTE_KEY}],
                    "value": {"string_match": {"exact": plan.key}},
                }
            ],
        },
        "request_headers_to_add": [
            {
                "header": {
                    "key": REQUEST_ID,
                    "value": f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{REQUEST_ID_KEY})%",
                },
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        # What never reaches a provider and needs no look at the request; the
        # provider stage removes the rest the allow-list does not forward.
        "request_headers_to_remove": [
            ROUTE_HEADER,
            *sorted(forwarding.CREDENTIALS),
            *sorted(
                {config.quota.identity.user_header, config.quota.identity.tenant_header}
            ),
            *forwarding.HeaderFilter(
                config.forward_headers.allow, config.forward_headers.deny
            ).route_removals(),
        ],
        "request_body_buffer_limit": config.limits.body_buffer_bytes,
        "route": {
            "timeout": "0s",  # streams may run long; idle timers bound silence instead
            # Silence between chunks as the client sees it. Not the per-try idle
            # timeout: that one keeps running after the response has started, on
            # what leaves the provider stage, so a chunk the stage drops is
            # silence and a slow stream is cut with no retry possible.
            "idle_timeout": _secs(t.stream_idle),
            "auto_host_rewrite": True,
            "inline_cluster_specifier_plugin": {
                "extension": {
                    "name": "envoy.router.cluster_specifier_plugin.priority_group",
                    "typed_config": {
                        _T: f"{_API}.extensions.router.cluster_specifiers.priority_group.v3."
                        "PriorityGroupClusterSpecifier",
                        "priority_groups": groups,
                    },
                }
            },
            "retry_policy": {
                "retry_on": "reset,connect-failure,refused-stream,retriable-status-codes",
                "retriable_status_codes": RETRIABLE_STATUS,
                "num_retries": plan.retries,
                "refresh_cluster_on_retry": True,
                # Until the response starts (then Envoy ignores it): a stalled
                # provider becomes a retry, a slow stream is left alone.
                "per_try_timeout": _secs(t.first_byte),
                "retry_back_off": {
                    "base_interval": _secs(t.retry_base),
                    "max_interval": _secs(t.retry_max),
                },
                "rate_limited_retry_back_off": {
                    "reset_headers": [{"name": "retry-after", "format": "SECONDS"}],
                    "max_interval": _secs(t.retry_after_max),
                },
            },
        },
        **_count_tokens_marker(plan),
    }


def _count_tokens_marker(plan: RoutePlan) -> dict[str, Any]:
    """On count_tokens routes, the answer says the provider counted (pipeline.count_tokens)."""
    if plan.api is not ClientApi.ANTHROPIC_COUNT_TOKENS:
        return {}
    header = {"key": TOKEN_COUNT_HEADER, "value": "provider"}
    return {
        "response_headers_to_add": [
            {"header": header, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ]
    }


_EXTPROC_PER_ROUTE = f"{_API}.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"


def _direct(name: str, path: str, body: bytes, *, head: bool = False) -> dict[str, Any]:
    """A GET (and with ``head``, a HEAD) Envoy answers itself: no message to the ext_proc.

    Other methods on the path, and paths not listed (an unknown model's card),
    fall through to the policy stage, which answers them (405, 404).
    """
    method = {"safe_regex": {"regex": "GET|HEAD"}} if head else {"exact": "GET"}
    return {
        "name": name,
        "match": {
            "path": path,
            "headers": [{"name": ":method", "string_match": method}],
        },
        "direct_response": {"status": 200, "body": {"inline_string": body.decode()}},
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "typed_per_filter_config": {
            "envoy.filters.http.ext_proc": {_T: _EXTPROC_PER_ROUTE, "disabled": True}
        },
    }


def model_routes(config: GatewayConfig) -> list[dict[str, Any]]:
    """GET /v1/models and each model's card (under /v1 and /openai/v1), as direct responses."""
    listing = model_list.list_body(config)
    routes = [_direct("models", path, listing) for path in model_list.LIST_PATHS]
    for name, card in model_list.cards(config).items():
        body = model_list.card_body(card)
        routes += [_direct("model", f"{path}/{name}", body) for path in model_list.LIST_PATHS]
    return routes + anthropic_model_routes(config)


def anthropic_model_routes(config: GatewayConfig) -> list[dict[str, Any]]:
    """The Anthropic API's model list and cards, and the probes of its base URL."""
    listing = model_list_anthropic.list_body(config)
    routes = [_direct("anthropic-models", model_list_anthropic.LIST_PATH, listing)]
    for name, card in model_list_anthropic.cards(config).items():
        path = f"{model_list_anthropic.LIST_PATH}/{name}"
        routes.append(_direct("anthropic-model", path, model_list_anthropic.card_body(card)))
    routes += [
        _direct("anthropic-probe", path, b"{}", head=True)
        for path in model_list_anthropic.PROBE_PATHS
    ]
    return routes


def _entry(path: str, style: ErrorStyle, config: GatewayConfig) -> dict[str, Any]:
    """Where a model call is matched at header time, until the policy stage routes it.

    The policy filter takes its one-message mode from here (the filter's
    default). A request that reaches this route's own answer sent the policy
    stage nothing: it had no body (Envoy sends no message for an empty body).
    """
    err = GatewayError(400, "request body is required", code="invalid_request")
    return {
        "name": "entry",
        "match": {
            "path": path,
            "headers": [{"name": ":method", "string_match": {"exact": "POST"}}],
        },
        "request_body_buffer_limit": config.limits.body_buffer_bytes,
        "direct_response": {
            "status": err.status,
            "body": {"inline_string": render(err, style).decode()},
        },
        "response_headers_to_add": [
            {
                "header": {"key": "content-type", "value": "application/json"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def _catch_all(config: GatewayConfig) -> dict[str, Any]:
    """Every other request: the policy stage sees its headers and refuses it (404, 405)."""
    return {
        "name": "unrouted",
        "match": {"prefix": "/"},
        "request_body_buffer_limit": config.limits.body_buffer_bytes,
        "direct_response": {
            "status": 500,
            "body": {"inline_string": _UNROUTED},
        },
        "typed_per_filter_config": {
            "envoy.filters.http.ext_proc": {
                _T: _EXTPROC_PER_ROUTE,
                "overrides": {"processing_mode": pipeline.policy_refusal_mode()},
            }
        },
    }


def _circuit_breakers(config: GatewayConfig) -> dict[str, Any]:
    """Envoy's defaults (3 retries, 1024 requests) suit a mesh hop, not a gateway.

    With the route refreshing its cluster on retry, Envoy 1.40 charges a retry
    to the cluster it goes to (tests/test_failover_load.py reads the counters),
    so the budget is a share of the requests in flight to the fallback.
    """
    cb = config.circuit_breakers
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                "max_connections": cb.max_connections,
                "max_pending_requests": cb.max_pending_requests,
                "max_requests": cb.max_requests,
                "retry_budget": {
                    "budget_percent": {"value": cb.retry_budget_percent},
                    "min_retry_concurrency": cb.min_retry_concurrency,
                },
                "track_remaining": True,
            }
        ]
    }


def _provider_cluster(provider: Provider, config: GatewayConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        _T: f"{_API}.extensions.upstreams.http.v3.HttpProtocolOptions",
        "common_http_protocol_options": {"idle_timeout": "60s"},
        "http_filters": [
            _provider_filter(provider, config.limits),
            # Puts back the content-length CONTINUE_AND_REPLACE removes (else
            # the request goes chunked, which some providers refuse).
            {
                "name": "envoy.filters.http.buffer",
                "typed_config": {
                    _T: f"{_API}.extensions.filters.http.buffer.v3.Buffer",
                    "max_request_bytes": config.limits.body_buffer_bytes,
                },
            },
            {
                "name": "envoy.filters.http.upstream_codec",
                "typed_config": {
                    _T: f"{_API}.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
                },
            },
        ],
    }
    if provider.tls:
        options["auto_config"] = {"http2_protocol_options": {}, "http_protocol_options": {}}
    else:
        options["explicit_http_config"] = {"http_protocol_options": {}}
    cluster: dict[str, Any] = {
        "name": provider.cluster,
        "type": "STATIC" if _is_ip(provider.host) else "LOGICAL_DNS",
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": _secs(config.timeouts.connect),
        "load_assignment": {
            "cluster_name": provider.cluster,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {
                                        "address": provider.host,
                                        "port_value": provider.port,
                                    }
                                },
                                "hostname": provider.host,
                            }
                        },
                    ]
                }
            ],
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options,
        },
        "circuit_breakers": _circuit_breakers(config),
    }
    if provider.tls:
        validation: dict[str, Any] = {"trusted_ca": {"filename": provider.ca_file or SYSTEM_CA}}
        if not _is_ip(provider.host):
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "DNS", "matcher": {"exact": provider.host}},
            ]
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                _T: f"{_API}.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": provider.host,
                "common_tls_context": {
                    "alpn_protocols": ["h2", "http/1.1"],
                    "validation_context": validation,
                },
            },
        }
    return cluster


def extproc_cluster(socket_path: str) -> dict[str, Any]:
    return {
        "name": EXTPROC_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "per_connection_buffer_limit_bytes": EXTPROC_MESSAGE_BYTES,
        # Every request holds a policy-stage stream and, per attempt, a
        # provider-stage one. Envoy's default of 1024 streams turned requests
        # into empty 500s once slow clients held ~1000; the downstream limits
        # (connections, streams, header and request timeouts) bound the load.
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": 64,
                    "max_pending_requests": EXTPROC_MAX_STREAMS,
                    "max_requests": EXTPROC_MAX_STREAMS,
                    "track_remaining": True,
                }
            ]
        },
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                _T: f"{_API}.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                        "max_concurrent_streams": 10000,
                    }
                },
            },
        },
        # The readiness listener answers 503 while this check fails (ready_listener),
        # and Envoy waits for its first round before it starts listening.
        # no_traffic_interval: else an idle cluster is checked once a minute.
        "health_checks": [
            {
                "timeout": "1s",
                "interval": _secs(EXTPROC_HEALTH_INTERVAL),
                "no_traffic_interval": _secs(EXTPROC_HEALTH_INTERVAL),
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
        "load_assignment": {
            "cluster_name": EXTPROC_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"pipe": {"path": socket_path}}}},
                    ]
                }
            ],
        },
    }


def _access_log() -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                _T: f"{_API}.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {
                    "json_format": {
                        "time": "%START_TIME%",
                        "method": "%REQ(:METHOD)%",
                        "path": "%REQ(:PATH)%",
                        "status": "%RESPONSE_CODE%",
                        "details": "%RESPONSE_CODE_DETAILS%",
                        "flags": "%RESPONSE_FLAGS%",
                        "route": "%ROUTE_NAME%",
                        "cluster": "%UPSTREAM_CLUSTER%",
                        "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
                        "duration_ms": "%DURATION%",
                        "request_id": "%REQ(X-REQUEST-ID)%",
                    }
                },
            },
        }
    ]


ROUTE_CONFIG = "sidegate"


def route_config(config: GatewayConfig) -> dict[str, Any]:
    plans = plan_routes(config)
    # Routes by metadata first: after the policy stage's reply they must win
    # over the entry routes their requests matched at header time.
    routes = (
        model_routes(config)
        + [_route(p, config) for p in plans.values()]
        + [_entry(path, style, config) for path, style in proxy_paths()]
        + [_catch_all(config)]
    )
    return {
        "name": ROUTE_CONFIG,
        "virtual_hosts": [{"name": "sidegate", "domains": ["*"], "routes": routes}],
    }


def app_listener(config: GatewayConfig, rds: dict[str, Any] | None = None) -> dict[str, Any]:
    """The app listener; with ``rds`` (a config source) its routes come from RDS.

    Routes from RDS change under open connections; inline routes would make
    every route change a new listener, and keep-alive connections would go on
    using the old routes until they close.
    """
    t, limits = config.timeouts, config.limits
    hcm: dict[str, Any] = {
        _T: f"{_API}.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "sidegate",
        "codec_type": "AUTO",
        "stream_idle_timeout": _secs(t.stream_idle),
        # Slow clients: headers, then the whole request, must arrive in time,
        # or a trickle of bytes holds a connection and a processor stream.
        # request_timeout stops once the request is in (DESIGN: streams run long).
        "request_headers_timeout": _secs(t.request_headers),
        "request_timeout": _secs(t.request),
        "max_request_headers_kb": limits.max_request_headers_kb,
        "common_http_protocol_options": {"idle_timeout": _secs(t.connection_idle)},
        "http2_protocol_options": {"max_concurrent_streams": limits.max_streams_per_connection},
        "local_reply_config": local_reply_config(config.limits.max_request_body_bytes),
        "http_filters": [
            _body_limit_filter(config.limits),
            _policy_filter(config.quota.identity, config.limits),
            _hold_filter(config.limits),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    _T: f"{_API}.extensions.filters.http.router.v3.Router",
                    "suppress_envoy_headers": True,
                },
            },
        ],
    }
    if rds is None:
        hcm["route_config"] = route_config(config)
    else:
        hcm["rds"] = {"route_config_name": ROUTE_CONFIG, "config_source": rds}
    if config.envoy.access_log:
        hcm["access_log"] = _access_log()
    listen = config.listen
    return {
        "name": APP_LISTENER,
        "address": {"socket_address": {"address": listen.address, "port_value": listen.port}},
        # Sized for responses: Envoy 1.40 dies (SIGSEGV) if it crosses a
        # watermark after the provider's response ended while the provider
        # stage still hands back bytes (README, "Large responses"). Request
        # bodies have their own, lower bound (the body-limit buffer filter).
        "per_connection_buffer_limit_bytes": max(
            limits.body_buffer_bytes, limits.client_buffer_bytes
        ),
        # Never share the port with another process (a second sidegate would
        # silently split the traffic): its bind fails instead.
        "enable_reuse_port": False,
        "filter_chains": [
            {
                "filters": [
                    _connection_limit(limits.max_connections),
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm},
                ]
            }
        ],
    }


def _connection_limit(max_connections: int) -> dict[str, Any]:
    """Connections past the limit are closed at once (counted across workers)."""
    return {
        "name": "envoy.filters.network.connection_limit",
        "typed_config": {
            _T: f"{_API}.extensions.filters.network.connection_limit.v3.ConnectionLimit",
            "stat_prefix": "app",
            "max_connections": max_connections,
        },
    }


def provider_clusters(config: GatewayConfig) -> list[dict[str, Any]]:
    return [_provider_cluster(p, config) for p in config.providers.values()]


# The app listener serves one pod over loopback: this many open connections is
# far beyond any app's pool, and a bound Envoy otherwise warns about at start.
MAX_DOWNSTREAM_CONNECTIONS = 10000


def overload_manager() -> dict[str, Any]:
    return {
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    _T: f"{_API}.extensions.resource_monitors.downstream_connections.v3."
                    "DownstreamConnectionsConfig",
                    "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                },
            }
        ]
    }


def admin(socket_path: str) -> dict[str, Any]:
    """Envoy's admin API on a Unix socket only its own uid may open, never on TCP.

    Any process in the pod shares its loopback: on a port, the app could turn
    on debug logging (which prints the injected keys) or stop the gateway.
    """
    return {"address": {"pipe": {"path": socket_path, "mode": ADMIN_SOCKET_MODE}}}


def admin_socket_beside(extproc_socket: str) -> str:
    return str(PurePath(extproc_socket).parent / ADMIN_SOCKET)


def layered_runtime() -> dict[str, Any]:
    """Runtime flags sidegate needs, then the admin layer Envoy has by default.

    Graceful close: when a request is done Envoy half-closes its ext_proc
    streams and waits (1 s at most) for the server's status instead of
    resetting them. On a reset stream grpc.aio fails the pending read and the
    final status, and leaks each failed batch's op array (grpc/grpc#43360):
    about 100 bytes a request that the process never gets back.
    """
    flags = {"envoy.reloadable_features.ext_proc_graceful_grpc_close": True}
    return {
        "layers": [
            {"name": "sidegate", "static_layer": flags},
            {"name": "admin", "admin_layer": {}},
        ]
    }


def render_bootstrap(
    config: GatewayConfig, socket_path: str, admin_socket: str | None = None
) -> dict[str, Any]:
    """Everything static: what ``sidegate config render`` prints and the tests start."""
    return {
        "node": {"id": "sidegate", "cluster": "sidegate"},
        "admin": admin(admin_socket or admin_socket_beside(socket_path)),
        "overload_manager": overload_manager(),
        "layered_runtime": layered_runtime(),
        "static_resources": {
            "listeners": [app_listener(config)],
            "clusters": [extproc_cluster(socket_path), *provider_clusters(config)],
        },
    }


def render_yaml(config: GatewayConfig, socket_path: str, admin_socket: str | None = None) -> str:
    return _dump(render_bootstrap(config, socket_path, admin_socket))


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=120)

"""The Envoy bootstrap, generated from the gateway config (never written by hand).

Shape (see DESIGN.md): one loopback listener whose HTTP filter chain is the
policy-stage ext_proc then the router; one route per (route, client API) plan,
selected by the routing header the policy stage sets, failing over between
priority groups; one cluster per provider whose upstream filter chain runs the
provider-stage ext_proc once per attempt. A request the policy stage did not
route hits a catch-all that refuses it, so traffic never bypasses the policy.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import yaml

from .apis import ErrorStyle
from .config import GatewayConfig, Provider
from .policy import ROUTE_HEADER, SLOW_WORK_TIMEOUT
from .quota.config import Identity
from .routing import RoutePlan, plan_routes
from .server import STAGE_METADATA

EXTPROC_CLUSTER = "sidegate_extproc"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
RETRIABLE_STATUS = [429, 500, 502, 503, 504, 529]
# Upstream failures Envoy answers itself; their replies are rewritten into the
# caller's error format.
UPSTREAM_FAILURE_FLAGS = ["UH", "UF", "UO", "NR", "URX", "UT", "UC", "UR", "UPE"]

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


def _extproc(stage: str, mode: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        _T: f"{_API}.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {
            "envoy_grpc": {"cluster_name": EXTPROC_CLUSTER},
            "initial_metadata": [{"key": STAGE_METADATA, "value": stage}],
        },
        "failure_mode_allow": False,
        "message_timeout": "0.5s",
        "max_message_timeout": _secs(SLOW_WORK_TIMEOUT),
        "processing_mode": mode,
        **extra,
    }


def _policy_filter(identity: Identity) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": _extproc(
            "policy",
            {
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "response_header_mode": "SKIP",
                "response_body_mode": "NONE",
            },
            route_cache_action="DEFAULT",
            # Cookies and the like are of no use to the policy and cost bytes per request.
            forward_rules={
                "allowed_headers": {
                    "patterns": [
                        {"exact": h}
                        for h in (
                            ":path",
                            ":method",
                            "content-type",
                            "content-length",
                            "x-request-id",
                            "anthropic-version",
                            "anthropic-beta",
                            identity.user_header,
                            identity.tenant_header,
                        )
                    ]
                }
            },
        ),
    }


def _provider_filter(provider: Provider) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": _extproc(
            f"provider:{provider.name}",
            {
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "response_header_mode": "SEND",
                "response_body_mode": "FULL_DUPLEX_STREAMED",
                "response_trailer_mode": "SEND",  # required with FULL_DUPLEX_STREAMED
            },
            request_attributes=["upstream.request_attempt_count"],
            mutation_rules={"disallow_is_error": True},
            forward_rules={
                "allowed_headers": {
                    "patterns": [{"exact": h} for h in (":status", "content-type", "x-request-id")]
                }
            },
        ),
    }


def _error_mapper(style: ErrorStyle, path_prefix: str | None) -> dict[str, Any]:
    flags = {"response_flag_filter": {"flags": UPSTREAM_FAILURE_FLAGS}}
    if path_prefix is None:
        filt: dict[str, Any] = flags
    else:
        filt = {
            "and_filter": {
                "filters": [
                    flags,
                    {
                        "header_filter": {
                            "header": {"name": ":path", "string_match": {"prefix": path_prefix}}
                        }
                    },
                ]
            }
        }
    message = "sidegate: %LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)"
    if style is ErrorStyle.ANTHROPIC:
        body: dict[str, Any] = {"type": "error", "error": {"type": "api_error", "message": message}}
    else:
        body = {
            "error": {
                "message": message,
                "type": "server_error",
                "param": None,
                "code": "upstream_unavailable",
            }
        }
    return {"filter": filt, "body_format_override": {"json_format": body}}


# Upstream failures that mean the provider itself is out of reach, with a hint
# naming it (%UPSTREAM_CLUSTER% is provider_<name>). UH: the cluster has no
# host, which for a LOGICAL_DNS cluster means its host name did not resolve.
_UNREACHABLE = {
    "UH": "sidegate: provider %UPSTREAM_CLUSTER% has no address: the host of its base_url "
    "did not resolve, so the provider could not be reached (check the name and DNS; "
    "`sidegate config check --probe` tests it) (%RESPONSE_CODE_DETAILS%)",
    "UF": "sidegate: could not connect to provider %UPSTREAM_CLUSTER%: %LOCAL_REPLY_BODY% "
    "(%RESPONSE_CODE_DETAILS%)",
}


def _unreachable_mappers() -> list[dict[str, Any]]:
    mappers = []
    for flag, message in _UNREACHABLE.items():
        for style, prefix in ((ErrorStyle.ANTHROPIC, "/anthropic/"), (ErrorStyle.OPENAI, None)):
            mapper = _error_mapper(style, prefix)
            flags = {"response_flag_filter": {"flags": [flag]}}
            if prefix is None:
                mapper["filter"] = flags
            else:
                mapper["filter"]["and_filter"]["filters"][0] = flags
            mapper["body_format_override"]["json_format"]["error"]["message"] = message
            mappers.append(mapper)
    return mappers


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
        "match": {
            "prefix": "/",
            "headers": [
                {"name": ROUTE_HEADER, "string_match": {"exact": plan.key}},
            ],
        },
        "request_headers_to_remove": [ROUTE_HEADER],
        "request_body_buffer_limit": config.limits.max_request_body_bytes + 65536,
        "route": {
            "timeout": "0s",  # streams may run long; idle timers bound silence instead
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
                "per_try_idle_timeout": _secs(t.first_byte),
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
    }


def _catch_all(config: GatewayConfig) -> dict[str, Any]:
    return {
        "name": "unrouted",
        "match": {"prefix": "/"},
        "request_body_buffer_limit": config.limits.max_request_body_bytes + 65536,
        "direct_response": {
            "status": 500,
            "body": {"inline_string": _UNROUTED},
        },
    }


def _provider_cluster(provider: Provider, config: GatewayConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        _T: f"{_API}.extensions.upstreams.http.v3.HttpProtocolOptions",
        "common_http_protocol_options": {"idle_timeout": "60s"},
        "http_filters": [
            _provider_filter(provider),
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
        "per_connection_buffer_limit_bytes": 32 * 1024 * 1024,
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
    routes = [_route(p, config) for p in plans.values()] + [_catch_all(config)]
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
    hcm: dict[str, Any] = {
        _T: f"{_API}.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "sidegate",
        "codec_type": "AUTO",
        "stream_idle_timeout": _secs(config.timeouts.stream_idle),
        "request_timeout": "0s",
        "common_http_protocol_options": {"idle_timeout": "3600s"},
        "local_reply_config": {
            "mappers": [
                *_unreachable_mappers(),
                _error_mapper(ErrorStyle.ANTHROPIC, "/anthropic/"),
                _error_mapper(ErrorStyle.OPENAI, None),
            ]
        },
        "http_filters": [
            _policy_filter(config.quota.identity),
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
        "name": "app",
        "address": {"socket_address": {"address": listen.address, "port_value": listen.port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
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


def _admin(port: int) -> dict[str, Any]:
    return {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}


def render_bootstrap(config: GatewayConfig, socket_path: str) -> dict[str, Any]:
    """Everything static: what ``sidegate config render`` prints and the tests start."""
    return {
        "node": {"id": "sidegate", "cluster": "sidegate"},
        "admin": _admin(config.listen.admin_port),
        "overload_manager": overload_manager(),
        "static_resources": {
            "listeners": [app_listener(config)],
            "clusters": [extproc_cluster(socket_path), *provider_clusters(config)],
        },
    }


def render_yaml(config: GatewayConfig, socket_path: str) -> str:
    return _dump(render_bootstrap(config, socket_path))


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, width=120)

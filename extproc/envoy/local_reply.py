"""Envoy's own refusals, rewritten into the caller's error format.

Envoy answers some requests itself, in plain text: a body over its buffer
(413), headers too large (431) or malformed (400), a client too slow to send
its request (408), an upgrade it refuses (426), an exhausted provider (503:
circuit breaker overflow, no healthy host, connect failure), a stalled attempt
(504), or a processor failure (500). Each becomes the JSON error of the API the
path belongs to (Anthropic under ``/anthropic/``, OpenAI elsewhere), with the
same status. A 503 carries ``Retry-After``, so SDKs back off and retry.

Replies the policy stage makes (details ``sidegate_*``) are already in the
caller's format, and the catch-all route's direct response is too; neither is
touched.
"""

from __future__ import annotations

from typing import Any

from ..apis import ErrorStyle
from ..errors import anthropic_error_body, anthropic_type, openai_error_body, openai_type

ANTHROPIC_PREFIX = "/anthropic/"
RETRY_AFTER_SECONDS = 1
# Local replies that are not sidegate's own. CEL, because only code details
# tell a policy-stage reply from an Envoy one.
_ENVOY_MADE = (
    "!(response.code_details.startsWith('sidegate_') || response.code_details == 'direct_response')"
)
# The processor did not answer in time: it is saturated (or hung), which is
# overload, not a slow provider. Shed it as a 503 with Retry-After, as the SDKs
# back off on; the request went to no provider unless its response had begun.
_PROCESSOR_TIMEOUT = "response.code_details == 'ext_proc_error_per-message_timeout_exceeded'"
# The processor's stream failed (down, restarting, or it failed the stream):
# the ext_proc filter answers status_on_error (503) with these details.
_PROCESSOR_DOWN = (
    "response.code_details.startsWith('ext_proc_error') && "
    "response.code_details != 'ext_proc_error_per-message_timeout_exceeded'"
)
_CEL_FILTER = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"
_DETAILS = "%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)"


def _status(op: str, code: int) -> dict[str, Any]:
    return {
        "status_code_filter": {
            "comparison": {
                "op": op,
                "value": {"default_value": code, "runtime_key": "sidegate.local_reply"},
            }
        }
    }


def _filter(style: ErrorStyle, status: dict[str, Any], expression: str) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [
        status,
        {
            "extension_filter": {
                "name": "envoy.access_loggers.extension_filters.cel",
                "typed_config": {
                    "@type": _CEL_FILTER,
                    "expression": expression,
                },
            }
        },
    ]
    if style is ErrorStyle.ANTHROPIC:
        filters.append(
            {
                "header_filter": {
                    "header": {"name": ":path", "string_match": {"prefix": ANTHROPIC_PREFIX}}
                }
            }
        )
    return {"and_filter": {"filters": filters}}


def _body(style: ErrorStyle, status: int, message: str, code: str) -> dict[str, Any]:
    if style is ErrorStyle.ANTHROPIC:
        return anthropic_error_body(message, anthropic_type(status))
    return openai_error_body(message, openai_type(status), code=code)


def _mapper(
    style: ErrorStyle,
    status: dict[str, Any],
    typical: int,
    message: str,
    code: str,
    retry_after: bool = False,
    expression: str = _ENVOY_MADE,
    status_code: int | None = None,
) -> dict[str, Any]:
    mapper: dict[str, Any] = {
        "filter": _filter(style, status, expression),
        "body_format_override": {"json_format": _body(style, typical, message, code)},
    }
    if status_code is not None:
        mapper["status_code"] = status_code
    if retry_after:
        mapper["headers_to_add"] = [
            {
                "header": {"key": "retry-after", "value": str(RETRY_AFTER_SECONDS)},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ]
    return mapper


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


def _unreachable_mapper(style: ErrorStyle, flag: str, message: str) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [{"response_flag_filter": {"flags": [flag]}}]
    if style is ErrorStyle.ANTHROPIC:
        filters.append(
            {
                "header_filter": {
                    "header": {"name": ":path", "string_match": {"prefix": ANTHROPIC_PREFIX}}
                }
            }
        )
    return {
        "filter": {"and_filter": {"filters": filters}} if len(filters) > 1 else filters[0],
        "body_format_override": {
            # Not overload: the provider is out of reach (Anthropic's api_error).
            "json_format": _body(style, 500, message, "upstream_unavailable")
        },
        "headers_to_add": [
            {
                "header": {"key": "retry-after", "value": str(RETRY_AFTER_SECONDS)},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
    }


def _style_mappers(style: ErrorStyle, max_body_bytes: int) -> list[dict[str, Any]]:
    too_large = (
        f"sidegate: the request body exceeds the limit of {max_body_bytes} bytes "
        "(limits.max_request_body_bytes)"
    )
    return [
        *(_unreachable_mapper(style, flag, text) for flag, text in _UNREACHABLE.items()),
        _mapper(
            style,
            _status("EQ", 504),
            503,
            "sidegate: overloaded, retry later (the gateway's processor did not answer in time)",
            "overloaded",
            retry_after=True,
            expression=_PROCESSOR_TIMEOUT,
            status_code=503,
        ),
        _mapper(
            style,
            _status("EQ", 503),
            503,
            "sidegate: the gateway's policy service (ext_proc) is unavailable; retry shortly",
            "extproc_unavailable",
            retry_after=True,
            expression=_PROCESSOR_DOWN,
        ),
        _mapper(style, _status("EQ", 413), 413, too_large, "request_too_large"),
        _mapper(
            style,
            _status("EQ", 503),
            503,
            f"sidegate: unavailable, retry later: {_DETAILS}",
            "upstream_unavailable",
            retry_after=True,
        ),
        _mapper(style, _status("EQ", 408), 408, f"sidegate: {_DETAILS}", "request_timeout"),
        _mapper(style, _status("EQ", 504), 504, f"sidegate: {_DETAILS}", "upstream_timeout"),
        _mapper(style, _status("GE", 500), 500, f"sidegate: {_DETAILS}", "gateway_error"),
        _mapper(style, _status("GE", 400), 400, f"sidegate: {_DETAILS}", "invalid_request"),
    ]


def local_reply_config(max_body_bytes: int) -> dict[str, Any]:
    """HCM ``local_reply_config``: the first mapper that matches a reply applies."""
    return {
        "mappers": [
            *_style_mappers(ErrorStyle.ANTHROPIC, max_body_bytes),
            *_style_mappers(ErrorStyle.OPENAI, max_body_bytes),
        ]
    }

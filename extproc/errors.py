"""Errors in the caller's dialect: OpenAI error JSON or Anthropic error JSON.

A ``GatewayError`` carries what went wrong once; ``render`` writes it in the
format of whichever API the client called, with the matching HTTP status.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .apis import ErrorStyle

# Anthropic's error types by HTTP status (docs.anthropic.com, "Errors").
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# OpenAI's error `type` values by status, as its API returns them.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


# How much of a client's value (a model name, a path, a header) an error repeats.
ECHO_LIMIT = 100


def clip(value: str, limit: int = ECHO_LIMIT) -> str:
    """``value`` quoted for an error message, cut to ``limit`` characters.

    A client controls what it sends; echoing it whole would let one request
    make every error (and every log line quoting it) as large as its input.
    """
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


@dataclass(slots=True)
class GatewayError(Exception):
    status: int
    message: str
    code: str | None = None  # OpenAI's machine-readable `code`, e.g. "model_not_found"
    param: str | None = None  # the offending request field, e.g. "messages[2].content"
    retry_after: int | None = None  # seconds, sent as Retry-After (SDKs honour it)

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


def anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def openai_type(status: int) -> str:
    return _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


def openai_error_body(
    message: str, type_: str, *, code: str | None = None, param: str | None = None
) -> dict[str, object]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_error_body(message: str, type_: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": type_, "message": message}}


def internal(request_id: str) -> GatewayError:
    """The error for a failure of sidegate itself (the log has the details)."""
    return GatewayError(
        500,
        f"sidegate failed to process this request (request id {clip(request_id, 64)}); "
        "the gateway log says why",
        code="internal_error",
    )


def render_stream_event(err: GatewayError, style: ErrorStyle) -> bytes:
    """``err`` as a server-sent event, for a stream whose 200 already went out.

    Both SDKs raise on these: Anthropic's on an ``error`` event, OpenAI's on a
    ``data:`` chunk holding an ``error`` object.
    """
    if style is ErrorStyle.ANTHROPIC:
        return b"event: error\ndata: " + render(err, style) + b"\n\n"
    return b"data: " + render(err, style) + b"\n\n"


def render(err: GatewayError, style: ErrorStyle) -> bytes:
    if style is ErrorStyle.ANTHROPIC:
        body = anthropic_error_body(err.message, anthropic_type(err.status))
    else:
        body = openai_error_body(
            err.message, openai_type(err.status), code=err.code, param=err.param
        )
    return json.dumps(body).encode()

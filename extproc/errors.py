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


def render(err: GatewayError, style: ErrorStyle) -> bytes:
    if style is ErrorStyle.ANTHROPIC:
        body = anthropic_error_body(err.message, anthropic_type(err.status))
    else:
        body = openai_error_body(
            err.message, openai_type(err.status), code=err.code, param=err.param
        )
    return json.dumps(body).encode()

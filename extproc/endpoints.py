"""The HTTP endpoints sidegate answers, recognised from method and path.

OpenAI SDKs use a base URL ending in ``/v1`` (sidegate also accepts
``/openai/v1``); the Anthropic SDK's base URL is ``…/anthropic``, so its
requests arrive as ``/anthropic/v1/messages``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .apis import ClientApi, ErrorStyle
from .errors import GatewayError, clip


class Kind(enum.Enum):
    PROXY = "proxy"  # a model call, routed to a provider
    LIST_MODELS = "list-models"
    GET_MODEL = "get-model"


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: Kind
    style: ErrorStyle
    api: ClientApi | None = None
    model_id: str | None = None


ANTHROPIC_MESSAGES = "/anthropic/v1/messages"
ANTHROPIC_COUNT_TOKENS = "/anthropic/v1/messages/count_tokens"
_POST = {
    "/chat/completions": ClientApi.OPENAI_CHAT,
    "/embeddings": ClientApi.OPENAI_EMBEDDINGS,
    "/responses": ClientApi.OPENAI_RESPONSES,
}


def proxy_paths() -> list[tuple[str, ErrorStyle]]:
    """Every path a model call is POSTed to, with the error style its callers read."""
    bases = ("/v1", "/openai/v1")
    paths = [(f"{base}{rest}", ErrorStyle.OPENAI) for base in bases for rest in _POST]
    anthropic = [ANTHROPIC_MESSAGES, ANTHROPIC_COUNT_TOKENS]
    return [*paths, *((p, ErrorStyle.ANTHROPIC) for p in anthropic)]


def style_for_path(path: str) -> ErrorStyle:
    return ErrorStyle.ANTHROPIC if path.startswith("/anthropic/") else ErrorStyle.OPENAI


def classify(method: str, path: str) -> Endpoint:
    path = path.split("?", 1)[0]
    style = style_for_path(path)
    if style is ErrorStyle.ANTHROPIC:
        if path == ANTHROPIC_MESSAGES:
            return _only(
                method, "POST", path, Endpoint(Kind.PROXY, style, ClientApi.ANTHROPIC_MESSAGES)
            )
        if path == ANTHROPIC_COUNT_TOKENS:
            count = Endpoint(Kind.PROXY, style, ClientApi.ANTHROPIC_COUNT_TOKENS)
            return _only(method, "POST", path, count)
        if path == "/anthropic/v1/models":
            return _only(method, "GET", path, Endpoint(Kind.LIST_MODELS, style))
        if path.startswith("/anthropic/v1/models/") and len(path) > len("/anthropic/v1/models/"):
            model_id = path[len("/anthropic/v1/models/") :]
            return _only(method, "GET", path, Endpoint(Kind.GET_MODEL, style, model_id=model_id))
        raise _not_served(method, path)
    rest = next((path[len(p) :] for p in ("/openai/v1", "/v1") if path.startswith(p + "/")), None)
    if rest is None:
        raise _not_served(method, path)
    if rest in _POST:
        return _only(method, "POST", path, Endpoint(Kind.PROXY, style, _POST[rest]))
    if rest == "/models":
        return _only(method, "GET", path, Endpoint(Kind.LIST_MODELS, style))
    if rest.startswith("/models/") and len(rest) > len("/models/"):
        return _only(method, "GET", path, Endpoint(Kind.GET_MODEL, style, model_id=rest[8:]))
    raise _not_served(method, path)


def _not_served(method: str, path: str) -> GatewayError:
    return GatewayError(
        404, f"sidegate does not serve {clip(method, 20)} {clip(path)}", code="unknown_url"
    )


def _only(method: str, allowed: str, path: str, endpoint: Endpoint) -> Endpoint:
    if method != allowed:
        raise GatewayError(
            405,
            f"{clip(path)} accepts {allowed}, not {clip(method, 20)}",
            code="method_not_allowed",
        )
    return endpoint

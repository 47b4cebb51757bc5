"""The client-facing APIs sidegate serves, and which provider APIs can answer each."""

from __future__ import annotations

import enum


class ClientApi(enum.StrEnum):
    OPENAI_CHAT = "openai-chat"
    OPENAI_EMBEDDINGS = "openai-embeddings"
    OPENAI_RESPONSES = "openai-responses"
    ANTHROPIC_MESSAGES = "anthropic-messages"

    @property
    def error_style(self) -> ErrorStyle:
        return ErrorStyle.ANTHROPIC if self is ClientApi.ANTHROPIC_MESSAGES else ErrorStyle.OPENAI


class ErrorStyle(enum.Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


def route_key(route: str, api: ClientApi) -> str:
    """The value of the routing header that selects one Envoy route."""
    return f"{route}|{api.value}"

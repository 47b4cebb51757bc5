"""The client-facing APIs sidegate serves, and which provider APIs can answer each."""

from __future__ import annotations

import enum


class ClientApi(enum.StrEnum):
    OPENAI_CHAT = "openai-chat"
    OPENAI_EMBEDDINGS = "openai-embeddings"
    OPENAI_RESPONSES = "openai-responses"
    ANTHROPIC_MESSAGES = "anthropic-messages"
    # POST /anthropic/v1/messages/count_tokens: Messages' input, counted, never billed.
    ANTHROPIC_COUNT_TOKENS = "anthropic-count-tokens"

    @property
    def error_style(self) -> ErrorStyle:
        if self in (ClientApi.ANTHROPIC_MESSAGES, ClientApi.ANTHROPIC_COUNT_TOKENS):
            return ErrorStyle.ANTHROPIC
        return ErrorStyle.OPENAI


class ErrorStyle(enum.Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


def route_key(route: str, api: ClientApi) -> str:
    """The value of the routing header that selects one Envoy route."""
    return f"{route}|{api.value}"

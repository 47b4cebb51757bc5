"""Prompt token estimates over real request shapes of each client API."""

from __future__ import annotations

from typing import Any

import pytest

from extproc import tokenizer
from extproc.apis import ClientApi
from extproc.estimate import IMAGE_TOKENS, PER_MESSAGE, REPLY_PRIMER, prompt_tokens

ENC = tokenizer.load("o200k_base")


def n(text: str) -> int:
    return len(ENC.encode_ordinary(text))


count = n


M = PER_MESSAGE
CASES: list[tuple[str, ClientApi, dict[str, Any], int]] = [
    (
        "openai chat, system + user",
        ClientApi.OPENAI_CHAT,
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
        },
        2 * M + n("You are terse.") + n("What is the capital of France?") + REPLY_PRIMER,
    ),
    (
        "openai chat, content parts with an image (base64 not read as text)",
        ClientApi.OPENAI_CHAT,
        {
            "model": "gpt-4o",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Describe this."},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64," + "A" * 5000},
                        },
                    ],
                }
            ],
        },
        M + n("Describe this.") + IMAGE_TOKENS + REPLY_PRIMER,
    ),
    (
        "openai chat, assistant tool call and tool result",
        ClientApi.OPENAI_CHAT,
        {
            "model": "gpt-4o",
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Weather now",
                        "parameters": {"type": "object"},
                    },
                }
            ],
        },
        2 * M
        + n("get_weather")
        + n('{"city":"Paris"}')
        + n("18C")
        + REPLY_PRIMER
        + n("get_weather")
        + n("Weather now"),
    ),
    (
        "anthropic messages, top-level system and blocks",
        ClientApi.ANTHROPIC_MESSAGES,
        {
            "model": "claude",
            "max_tokens": 1024,
            "system": [
                {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Hi Claude"},
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": "iVBOR" * 900,
                            },
                        },
                    ],
                },
            ],
        },
        M + n("Hi Claude") + IMAGE_TOKENS + REPLY_PRIMER + n("Be brief."),
    ),
    (
        "embeddings, a string",
        ClientApi.OPENAI_EMBEDDINGS,
        {"model": "embed", "input": "The food was delicious"},
        n("The food was delicious"),
    ),
    (
        "embeddings, a batch",
        ClientApi.OPENAI_EMBEDDINGS,
        {"model": "embed", "input": ["one", "two three"]},
        n("one") + n("two three"),
    ),
    (
        "embeddings, pre-tokenised",
        ClientApi.OPENAI_EMBEDDINGS,
        {"model": "embed", "input": [[1, 2, 3], [4, 5]]},
        5,
    ),
]


@pytest.mark.parametrize(
    ("api", "body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_prompt_tokens(api: ClientApi, body: dict[str, Any], expected: int) -> None:
    assert prompt_tokens(api, body, count) == expected


def test_text_that_spells_a_special_token_is_text() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "<|endoftext|>"}]}
    assert (
        prompt_tokens(ClientApi.OPENAI_CHAT, body, count) == M + n("<|endoftext|>") + REPLY_PRIMER
    )

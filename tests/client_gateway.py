"""The gateway the real-client tests drive: OpenAI- and Anthropic-backed models, real names.

Each client test file starts one (module scope) from this config: the test
session's fake providers, ``gpt-4o`` on an OpenAI provider, ``claude-sonnet``
on an Anthropic provider answering schemas through a forced tool, and
``claude-native`` answering them with Anthropic's structured outputs.
"""

from __future__ import annotations

from typing import Any

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import gateway_doc

# The models a client test runs against, one per way an answer is made.
OPENAI_BACKED = "gpt-4o"
ANTHROPIC_BACKED = "claude-sonnet"
ANTHROPIC_NATIVE = "claude-native"
CHAT_MODELS = (OPENAI_BACKED, ANTHROPIC_BACKED, ANTHROPIC_NATIVE)


def client_doc(fakes: dict[str, FakeProvider]) -> dict[str, Any]:
    doc = gateway_doc(fakes)
    doc["models"][ANTHROPIC_NATIVE] = {
        "provider": "anthropic-b",
        "id": "claude-haiku-4-5",
        "structured_outputs": "native",
    }
    doc["model_names"] = {"patterns": {"claude-*": "claude"}, "default": "fast"}
    return doc


def provider_of(fakes: dict[str, FakeProvider], model: str) -> FakeProvider:
    """The fake that answers ``model``."""
    return {OPENAI_BACKED: fakes["oa"], ANTHROPIC_BACKED: fakes["an"], ANTHROPIC_NATIVE: fakes["bn"]}[
        model
    ]

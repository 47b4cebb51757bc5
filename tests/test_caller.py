"""Who is calling, from headers, the request body, the config and the pod."""

from __future__ import annotations

from typing import Any

import pytest

from extproc.apis import ClientApi
from extproc.errors import GatewayError
from extproc.quota.caller import ANONYMOUS, WORKLOAD_ENV, Caller, identify
from extproc.quota.config import Identity

CHAT, MESSAGES = ClientApi.OPENAI_CHAT, ClientApi.ANTHROPIC_MESSAGES
DEFAULT = Identity()

CASES: list[tuple[str, Identity, dict[str, str], ClientApi, dict[str, Any], Caller]] = [
    ("nothing known", DEFAULT, {}, CHAT, {}, Caller()),
    (
        "headers",
        DEFAULT,
        {"x-sidegate-user": "u1", "x-sidegate-tenant": "t1"},
        CHAT,
        {"user": "body-user"},
        Caller(user="u1", tenant="t1"),
    ),
    ("openai user field", DEFAULT, {}, CHAT, {"user": "u2"}, Caller(user="u2")),
    (
        "openai safety_identifier",
        DEFAULT,
        {},
        CHAT,
        {"safety_identifier": "hash-9"},
        Caller(user="hash-9"),
    ),
    (
        "anthropic metadata.user_id",
        DEFAULT,
        {},
        MESSAGES,
        {"metadata": {"user_id": "u3"}, "user": "ignored"},
        Caller(user="u3"),
    ),
    (
        "configured headers and defaults",
        Identity(user_header="x-end-user", tenant="acme", workload="billing"),
        {"x-end-user": "u4", "x-sidegate-user": "ignored"},
        CHAT,
        {},
        Caller(user="u4", tenant="acme", workload="billing"),
    ),
]


@pytest.mark.parametrize(
    ("identity", "headers", "api", "body", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_identify(
    identity: Identity,
    headers: dict[str, str],
    api: ClientApi,
    body: dict[str, Any],
    expected: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(WORKLOAD_ENV, raising=False)
    assert identify(identity, headers, api, body) == expected


def test_workload_comes_from_the_injected_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKLOAD_ENV, "apps/chat")
    assert identify(DEFAULT, {}, CHAT, {}).workload == "apps/chat"
    assert identify(Identity(workload="pinned"), {}, CHAT, {}).workload == "pinned"
    monkeypatch.delenv(WORKLOAD_ENV)
    assert identify(DEFAULT, {}, CHAT, {}).workload == ANONYMOUS


def test_an_oversized_identity_is_refused() -> None:
    with pytest.raises(GatewayError) as e:
        identify(DEFAULT, {"x-sidegate-tenant": "t" * 257}, CHAT, {})
    assert e.value.status == 400 and "header x-sidegate-tenant is 257 characters" in e.value.message
    with pytest.raises(GatewayError, match="the request's user field"):
        identify(DEFAULT, {}, CHAT, {"user": "u" * 300})

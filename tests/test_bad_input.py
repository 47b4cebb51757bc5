"""Bad input: a clear 4xx in the caller's format, naming the problem; no provider is called."""

from __future__ import annotations

import json

import httpx
import pytest

from extproc.fake_provider import FakeProvider
from tests.harness import GatewayProcess

CHAT = "/v1/chat/completions"
MESSAGES = "/anthropic/v1/messages"


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "needle"),
    [
        (CHAT, {"content": b'{"model": "fast", '}, 400, "not valid JSON"),
        (CHAT, {"content": b"[1,2]"}, 400, "must be a JSON object"),
        (CHAT, {"json": {"messages": [{"role": "user", "content": "x"}]}}, 400, "'model'"),
        (CHAT, {"json": {"model": "fast"}}, 400, "'messages'"),
        (
            CHAT,
            {"json": {"model": "gpt-5-ultra", "messages": [{"role": "user", "content": "x"}]}},
            404,
            "gpt-5-ultra",
        ),
        (
            CHAT,
            {
                "json": {
                    "model": "fast",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": "yes",
                }
            },
            400,
            "'stream'",
        ),
        (
            CHAT,
            {
                "content": b"model=fast",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            415,
            "application/json",
        ),
        ("/v1/embeddings", {"json": {"model": "embed"}}, 400, "'input'"),
        ("/v1/embeddings", {"json": {"model": "fast", "input": "x"}}, 400, "cannot serve"),
        ("/v1/completions", {"json": {"model": "fast", "prompt": "x"}}, 404, "/v1/completions"),
        (
            MESSAGES,
            {
                "json": {
                    "model": "claude",
                    "max_tokens": 0,
                    "messages": [{"role": "user", "content": "x"}],
                }
            },
            400,
            "'max_tokens'",
        ),
        (MESSAGES, {"content": b"nope"}, 400, "not valid JSON"),
    ],
)
def test_bad_requests(
    gateway: GatewayProcess,
    fakes: dict[str, FakeProvider],
    path: str,
    kwargs: dict[str, object],
    status: int,
    needle: str,
) -> None:
    headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
    if "content" in kwargs and "content-type" not in headers:
        headers["content-type"] = "application/json"
    r = httpx.post(gateway.base + path, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    body = r.json()
    if path.startswith("/anthropic/"):
        assert body["type"] == "error" and needle in body["error"]["message"]
    else:
        assert needle in body["error"]["message"] and body["error"]["type"]
    assert not any(f.requests for f in fakes.values())


def test_body_over_the_limit(fakes: dict[str, FakeProvider]) -> None:
    from tests.conftest import gateway_doc

    doc = gateway_doc(fakes)
    doc["limits"] = {"max_request_body_bytes": 4096}
    gw = GatewayProcess(doc).start()
    try:
        big = {"model": "fast", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(f"{gw.base}{CHAT}", json=big, timeout=10)
        assert r.status_code == 413 and "4096" in r.json()["error"]["message"]
        r = httpx.post(f"{gw.base}{MESSAGES}", json=dict(big, max_tokens=5), timeout=10)
        assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
        # Chunked, so no content-length to refuse it early: counted as it arrives.
        raw = json.dumps(big).encode()
        r = httpx.post(
            f"{gw.base}{CHAT}",
            content=iter([raw[:3000], raw[3000:]]),
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 413 and "4096" in r.json()["error"]["message"]
        assert not any(f.requests for f in fakes.values())
    finally:
        gw.stop()


def test_wrong_method(gateway: GatewayProcess) -> None:
    r = httpx.get(gateway.base + CHAT)
    assert r.status_code == 405 and "POST" in r.json()["error"]["message"]


def test_no_key_leaks_into_errors_or_logs(gateway: GatewayProcess) -> None:
    from tests.conftest import KEYS

    r = httpx.post(
        gateway.base + CHAT,
        json={"model": "smart", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-fake-fault-an": "status=401", "x-fake-fault-oa": "status=401"},
    )
    assert r.status_code == 401
    for key in KEYS.values():
        assert key not in r.text
        assert key not in gateway.log.read_text()

"""Which of the app's headers reach a provider: by class, configurable, never smuggled."""

from __future__ import annotations

import json
import socket
from typing import Any

import anthropic
import openai
import pytest

from extproc.config import ConfigError, parse_config
from extproc.devtools.fake_provider import FakeProvider
from extproc.forwarding import HeaderFilter, bad_value
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess

# What every provider request carries whatever the app sent: Envoy's and the
# provider stage's (host, length, encoding, the provider's own key).
BASE = {"host", "content-type", "content-length", "accept-encoding", "x-request-id"}

APP_HEADERS = {
    "cookie": "session=app-secret",
    "x-forwarded-for": "10.1.2.3",
    "forwarded": "for=10.1.2.3",
    "via": "1.1 app-proxy",
    "x-real-ip": "10.1.2.3",
    "x-internal-user": "alice@corp",
    "x-sidegate-anything": "1",
    "x-envoy-anything": "1",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=1",
    "anthropic-beta": "prompt-caching-2024-07-31",
}


def _only_names(fake: FakeProvider) -> set[str]:
    [req] = fake.requests
    return set(req.headers)


def test_openai_provider_gets_only_allowed_classes(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    client = openai.OpenAI(
        base_url=f"{gateway.base}/v1",
        api_key="app-placeholder",
        organization="org-app",
        project="proj-app",
        default_headers=APP_HEADERS,
        max_retries=0,
    )
    client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
    names = _only_names(fakes["oa"])
    # The SDK's x-stainless-* and the org/project are gone with the rest;
    # anthropic-beta means nothing to an OpenAI provider.
    assert names == BASE | {"authorization", "accept", "user-agent", "traceparent", "tracestate"}
    assert fakes["oa"].requests[0].headers["authorization"] == "Bearer sk-test-oa-secret"


def test_anthropic_provider_gets_its_api_headers(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    client = anthropic.Anthropic(
        base_url=f"{gateway.base}/anthropic",
        api_key="app-placeholder",
        default_headers=APP_HEADERS,
        max_retries=0,
    )
    client.messages.create(
        model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    req = fakes["an"].requests[0]
    assert set(req.headers) == BASE | {
        "x-api-key",
        "anthropic-version",
        "anthropic-beta",
        "accept",
        "user-agent",
        "traceparent",
        "tracestate",
    }
    assert req.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert req.headers["x-api-key"] == "sk-ant-test-an-secret"


def _raw_request(port: int, head: bytes, body: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\n" + head + b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body) + body
        )
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_bare_lf_cannot_smuggle_a_header(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    body = json.dumps({"model": "fast", "messages": [{"role": "user", "content": "x"}]}).encode()
    # Envoy (RFC 9112 §2.2 allows it) reads a bare LF as the end of a line,
    # so "x-injected" arrives as a header of its own: not on the allow-list.
    out = _raw_request(gateway.config.listen.port, b"X-Foo: a\nX-Injected: b\r\n", body)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    names = _only_names(fakes["oa"])
    assert "x-injected" not in names and "x-foo" not in names


def test_control_characters_never_reach_a_provider(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    body = b'{"model":"fast","messages":[{"role":"user","content":"x"}]}'
    for value in (b"a\x01b", b"a\x00b", b"a\x7fb"):
        out = _raw_request(gateway.config.listen.port, b"User-Agent: " + value + b"\r\n", body)
        # Envoy's HTTP/1 codec refuses these itself (its own text/plain 400:
        # no request exists yet to answer in the caller's format).
        assert out.startswith(b"HTTP/1.1 400"), out[:200]
    assert not any(f.requests for f in fakes.values())


def test_forward_headers_config(fakes: dict[str, FakeProvider]) -> None:
    doc = gateway_doc(fakes)
    doc["forward_headers"] = {
        "allow": ["x-stainless-*", "x-forwarded-for", "x-fake-fault-*"],
        "deny": ["user-agent", "traceparent", "anthropic-beta"],
    }
    gw = GatewayProcess(doc).start()
    try:
        headers = dict(APP_HEADERS, **{"x-forwarded-proto": "https"})
        client = openai.OpenAI(
            base_url=f"{gw.base}/v1", api_key="x", default_headers=headers, max_retries=0
        )
        client.chat.completions.create(model="fast", messages=[{"role": "user", "content": "x"}])
        req = fakes["oa"].requests[0]
        names = set(req.headers)
        assert "x-stainless-lang" in names and req.headers["x-forwarded-for"] == "10.1.2.3"
        assert not names & {"user-agent", "traceparent", "cookie", "x-internal-user"}
        # Envoy's own x-forwarded-proto is needed to route, then removed.
        assert "x-forwarded-proto" not in names
        fakes["oa"].requests.clear()

        an = anthropic.Anthropic(
            base_url=f"{gw.base}/anthropic", api_key="x", default_headers=headers, max_retries=0
        )
        an.messages.create(model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        # Denied: the app's anthropic-beta stays home.
        assert "anthropic-beta" not in fakes["an"].requests[0].headers
    finally:
        gw.stop()


@pytest.mark.parametrize(
    ("section", "where", "needle"),
    [
        ({"allow": ["authorization"]}, "forward_headers.allow[0]", "credential"),
        ({"allow": ["x-ok", "Cookie"]}, "forward_headers.allow[1]", "credential"),
        ({"allow": ["x-*"]}, "forward_headers.allow[0]", "sidegate's or Envoy's"),
        ({"allow": ["x-sidegate-user"]}, "forward_headers.allow[0]", "never forwarded"),
        ({"allow": ["proxy-*"]}, "forward_headers.allow[0]", "proxy-authorization"),
        ({"allow": ["connection"]}, "forward_headers.allow[0]", "hop-by-hop"),
        ({"allow": ["x foo"]}, "forward_headers.allow[0]", "header name"),
        ({"allow": ["*"]}, "forward_headers.allow[0]", "header name"),
        ({"deny": ["x-request-id"]}, "forward_headers.deny[0]", "always forwarded"),
        ({"allow": "x-foo"}, "forward_headers.allow", "expected a list"),
        ({"allowed": ["x-foo"]}, "forward_headers.allowed", "unknown field"),
    ],
)
def test_forward_headers_config_errors(
    fakes: dict[str, FakeProvider], section: dict[str, Any], where: str, needle: str
) -> None:
    doc = gateway_doc(fakes)
    doc["forward_headers"] = section
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.path == where and needle in info.value.message, str(info.value)


def test_header_filter_classes() -> None:
    f = HeaderFilter(allow=["x-stainless-*", "x-forwarded-for"], deny=["user-agent", "x-b3-*"])
    assert f.forwarded(":path") and f.forwarded("x-request-id") and f.forwarded("content-length")
    assert f.forwarded("x-stainless-os") and f.forwarded("x-forwarded-for")
    assert f.forwarded("traceparent") and f.forwarded("anthropic-beta")
    assert not f.forwarded("user-agent") and not f.forwarded("x-b3-traceid")
    assert not f.forwarded("x-forwarded-host") and not f.forwarded("x-internal")
    assert not f.forwarded("x-sidegate-user") and not f.forwarded("x-envoy-foo")
    # x-forwarded-proto is Envoy's to route by: the route removes it, not the stage.
    assert f.removals(["x-forwarded-proto", "x-internal", "accept"]) == ["x-internal"]
    assert f.route_removals() == ["x-forwarded-proto"]
    assert HeaderFilter(allow=["x-forwarded-*"]).route_removals() == []


def test_control_characters_are_found() -> None:
    assert bad_value({"a": "ok\tfine", "b": "caf\xe9"}) is None
    assert bad_value({"a": "ok", "b": "x\ry"}) == "b"
    assert bad_value({"a": "x\ny"}) == "a"
    assert bad_value({"a": "x\x00y"}) == "a"

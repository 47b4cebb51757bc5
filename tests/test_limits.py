"""Body and header limits: one setting sizes every buffer; refusals come in the caller's format."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from extproc.config import (
    EXTPROC_MESSAGE_BYTES,
    MAX_BODY_CEILING,
    ConfigError,
    parse_config,
)
from extproc.devtools.fake_provider import FakeProvider
from extproc.envoy.bootstrap import extproc_cluster, message_timeout, render_bootstrap
from extproc.stages.server import MAX_MESSAGE
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess

MiB = 1024 * 1024
CHAT = "/v1/chat/completions"
MESSAGES = "/anthropic/v1/messages"


@pytest.fixture(scope="module")
def big_gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    doc = gateway_doc(fakes)
    # Translating and sending 15 MiB takes a while on a busy test box.
    doc["timeouts"] = {"first_byte": "30s", "retry_base": "10ms", "retry_max": "50ms"}
    gw = GatewayProcess(doc).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize("size", [2 * MiB, 15 * MiB], ids=["2MiB", "15MiB"])
def test_large_bodies_pass_with_the_default_limit(
    big_gateway: GatewayProcess, fakes: dict[str, FakeProvider], size: int
) -> None:
    text = "x" * size
    oa = openai.OpenAI(base_url=f"{big_gateway.base}/v1", api_key="x", max_retries=0, timeout=60)
    resp = oa.chat.completions.create(model="fast", messages=[{"role": "user", "content": text}])
    assert resp.choices[0].message.content == f"Hello from oa! You said: {text}"
    assert len(fakes["oa"].requests[-1].body) > size
    an = anthropic.Anthropic(
        base_url=f"{big_gateway.base}/anthropic", api_key="x", max_retries=0, timeout=60
    )
    msg = an.messages.create(
        model="claude", max_tokens=5, messages=[{"role": "user", "content": text}]
    )
    assert msg.content[0].type == "text" and msg.content[0].text.endswith(text)
    assert len(fakes["an"].requests[-1].body) > size


def test_a_chunked_body_over_the_processors_cap_is_a_413(
    big_gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    # The app connection's buffer limit is sized for responses (256 MiB): without
    # a request-side bound Envoy buffered this 70 MiB body whole and sent it to
    # the ext_proc, whose gRPC cap (64 MiB) refused it: a 503 "retry shortly".
    body = json.dumps(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 70 * MiB}]}
    ).encode()
    sent = len(fakes["oa"].requests)
    r = httpx.post(
        big_gateway.base + CHAT,
        content=_chunked(body, MiB),
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["code"] == "request_too_large" and "max_request_body_bytes" in err["message"]
    assert len(fakes["oa"].requests) == sent


@pytest.fixture(scope="module")
def small_gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    doc = gateway_doc(fakes)
    doc["limits"] = {"max_request_body_bytes": 65536, "max_request_headers_kb": 16}
    gw = GatewayProcess(doc).start()
    yield gw
    gw.stop()


def _chunked(body: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_body_past_envoys_buffer_is_refused_in_the_callers_format(
    small_gateway: GatewayProcess, fakes: dict[str, FakeProvider], path: str
) -> None:
    # Chunked and past the buffer Envoy derives from the limit: Envoy refuses it
    # before the policy stage has the body; the reply is still the API's JSON.
    body = json.dumps(
        {"model": "fast", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 2 * MiB}]}
    ).encode()
    r = httpx.post(
        small_gateway.base + path,
        content=_chunked(body),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/json"
    err = _error(path, r.json())
    assert "65536" in err["message"] and "max_request_body_bytes" in err["message"]
    assert err["type"] == ("request_too_large" if path == MESSAGES else "invalid_request_error")
    assert not any(f.requests for f in fakes.values())


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_headers_too_large_are_refused_as_json(small_gateway: GatewayProcess, path: str) -> None:
    # Envoy refuses them before it has a request to read the path from, so the
    # reply is in the OpenAI format whatever the path.
    r = httpx.post(
        small_gateway.base + path,
        json={"model": "fast", "messages": []},
        headers={"x-big": "y" * 20_000},
        timeout=10,
    )
    assert r.status_code == 431, r.text
    err = _error(CHAT, r.json())
    assert err["type"] == "invalid_request_error" and "Too Large" in err["message"]


def _error(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.startswith("/anthropic/"):
        assert body["type"] == "error"
    err: dict[str, Any] = body["error"]
    assert isinstance(err["message"], str) and err["message"].startswith("sidegate")
    return err


def test_slow_request_headers_get_a_json_408(
    fakes: dict[str, FakeProvider],
) -> None:
    doc = gateway_doc(fakes)
    doc["timeouts"] = {"request_headers": "500ms"}
    gw = GatewayProcess(doc).start()
    try:
        # Headers never completed: no path to choose a format by, so OpenAI's.
        for path in (MESSAGES, CHAT):
            with socket.create_connection(("127.0.0.1", gw.config.listen.port), timeout=10) as s:
                s.sendall(f"POST {path} HTTP/1.1\r\nhost: x\r\n".encode())  # never finished
                reply = _read_all(s)
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), reply[:300]
            err = _error(CHAT, json.loads(body))
            assert "request header timeout" in err["message"] and err["code"] == "request_timeout"
    finally:
        gw.stop()


def _read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


# --- config -------------------------------------------------------------------


def _doc(**extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "p": {"api": "openai", "base_url": "http://127.0.0.1:1/v1", "keys": [{"env": "K"}]}
        },
        "models": {"m": {"provider": "p"}},
        **extra,
    }


def test_a_body_limit_the_ext_proc_path_cannot_carry_is_refused_at_load() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_doc(limits={"max_request_body_bytes": 1 << 30}))
    assert e.value.path == "limits.max_request_body_bytes"
    assert str(MAX_BODY_CEILING) in e.value.message and "ext_proc" in e.value.message
    parse_config(_doc(limits={"max_request_body_bytes": MAX_BODY_CEILING}))


def test_every_envoy_buffer_follows_the_body_limit() -> None:
    config = parse_config(_doc(limits={"max_request_body_bytes": 20 * MiB}))
    b = render_bootstrap(config, "/s.sock")
    listener = b["static_resources"]["listeners"][0]
    buffer = config.limits.body_buffer_bytes
    assert buffer > 20 * MiB
    # The connection's buffer is also the response's: at least the body limit,
    # and the request body itself is bounded by the buffer filter in front.
    assert listener["per_connection_buffer_limit_bytes"] >= buffer
    hcm = listener["filter_chains"][0]["filters"][-1]["typed_config"]
    (body_filter,) = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.buffer"]
    assert body_filter["typed_config"]["max_request_bytes"] == buffer
    assert hcm["http_filters"].index(body_filter) == 0, "the limit must apply before the policy"
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    # Every route that takes a body (the model list's GET routes take none).
    with_body = [r for r in routes if "route" in r or r["name"] == "unrouted"]
    assert with_body and all(r["request_body_buffer_limit"] == buffer for r in with_body)
    # What the ext_proc path carries is above the largest body Envoy may buffer.
    assert extproc_cluster("/s.sock")["per_connection_buffer_limit_bytes"] == EXTPROC_MESSAGE_BYTES
    assert MAX_BODY_CEILING < EXTPROC_MESSAGE_BYTES <= MAX_MESSAGE


@pytest.mark.parametrize(
    ("section", "value", "error"),
    [
        ("limits", {"max_request_headers_kb": 9000}, "limits.max_request_headers_kb: expected"),
        ("limits", {"max_connections": 0}, "limits.max_connections: expected"),
        ("limits", {"max_streams_per_connection": "x"}, "limits.max_streams_per_connection"),
        ("circuit_breakers", {"retry_budget_percent": 150}, "retry_budget_percent: expected a"),
        ("circuit_breakers", {"max_requests": 0}, "circuit_breakers.max_requests: expected"),
        ("circuit_breakers", {"retries": 3}, "circuit_breakers.retries: unknown field"),
        ("timeouts", {"request_headers": "soon"}, "timeouts.request_headers: expected a duration"),
    ],
)
def test_limit_fields_are_validated(section: str, value: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_doc(**{section: value}))
    assert error in str(e.value)


def test_the_wait_for_a_processor_reply_follows_the_largest_body_it_handles() -> None:
    small = parse_config(_doc())
    big_response = parse_config(_doc(limits={"max_response_bytes": 128 * MiB}))
    # A 128 MiB event is translated within one reply: Envoy must wait for it.
    assert message_timeout(big_response.limits) >= 0.5 + 128 / 16
    assert message_timeout(big_response.limits) > message_timeout(small.limits)

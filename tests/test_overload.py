"""Overload and slow clients: the gateway keeps serving, and sheds load in the caller's format.

Before these limits, ~1000 requests held open (unfinished chunked bodies,
trickled headers) used up the processor cluster's default 1024 streams and every
new request became an empty 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.envoy_stats import envoy_stats
from tests.harness import GatewayProcess

CHAT = "/v1/chat/completions"
MESSAGES = "/anthropic/v1/messages"


def _open(gw: GatewayProcess, first_bytes: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gw.config.listen.port), timeout=10)
    s.sendall(first_bytes)
    return s


def _unfinished_body(path: str) -> bytes:
    # Complete headers, then a chunked body that never ends: the policy stage
    # holds a processor stream for it while Envoy buffers.
    return (
        f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        'transfer-encoding: chunked\r\n\r\n5\r\n{"mod\r\n'
    ).encode()


def _trickled_headers(path: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nhost: x\r\n".encode()


def _wait(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _read_reply(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := s.recv(65536):
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:])
                }
                if len(body) >= int(headers.get("content-length", "-1")):
                    return int(lines[0].split()[1]), headers, body
    raise AssertionError(f"connection closed without a full reply: {data[:300]!r}")


def _served_or_shed(send: Any, attempts: int = 5) -> httpx.Response:
    for _ in range(attempts):
        r = send()
        if r.status_code == 200:
            return r
        assert r.status_code == 503 and r.headers["retry-after"] == "1", (r.status_code, r.text)
        assert r.json()["error"]["code"] == "overloaded"
        time.sleep(1)
    raise AssertionError(f"not served in {attempts} attempts")


def test_new_requests_are_served_while_slow_clients_pile_up(
    fakes: dict[str, FakeProvider],
) -> None:
    gw = GatewayProcess(gateway_doc(fakes)).start()
    held: list[socket.socket] = []
    try:
        # More unfinished bodies than Envoy's default 1024 processor streams.
        for i in range(1100):
            held.append(_open(gw, _unfinished_body(MESSAGES if i % 2 else CHAT)))
        for _ in range(200):
            held.append(_open(gw, _trickled_headers(CHAT)))

        def held_requests() -> int:
            return envoy_stats(gw, r"^http\.sidegate\.downstream_rq_active$").get(
                "http.sidegate.downstream_rq_active", 0
            )

        # The unfinished bodies are requests in Envoy (their headers are in);
        # the body-limit filter holds them, so they take no processor stream.
        _wait(lambda: held_requests() >= 1100, "Envoy to hold the unfinished requests")
        # On a busy box the processor may shed a request while it takes in the
        # 1,300: then only as a 503 with Retry-After, and a retry is served.
        r = _served_or_shed(lambda: httpx.get(f"{gw.base}/v1/models", timeout=10))
        assert r.json()["data"], r.text
        body = {"model": "fast", "messages": [{"role": "user", "content": "still there?"}]}
        r = _served_or_shed(lambda: httpx.post(f"{gw.base}{CHAT}", json=body, timeout=10))
        assert (
            r.json()["choices"][0]["message"]["content"] == "Hello from oa! You said: still there?"
        )
    finally:
        for s in held:
            s.close()
        gw.stop()


def test_slow_clients_are_cut_with_a_408_in_the_callers_format(
    fakes: dict[str, FakeProvider],
) -> None:
    doc = gateway_doc(fakes)
    doc["timeouts"] = {"request_headers": "1s", "request": "2s"}
    gw = GatewayProcess(doc).start()
    held: list[socket.socket] = []
    try:
        start = time.monotonic()
        body_a = _open(gw, _unfinished_body(MESSAGES))
        body_o = _open(gw, _unfinished_body(CHAT))
        held.extend((body_a, body_o))
        status, headers, raw = _read_reply(body_a)
        assert status == 408 and headers["content-type"] == "application/json"
        err = json.loads(raw)
        assert err["type"] == "error" and err["error"]["type"] == "timeout_error"
        assert "request_overall_timeout" in err["error"]["message"]
        status, _, raw = _read_reply(body_o)
        assert status == 408 and json.loads(raw)["error"]["code"] == "request_timeout"
        assert 1.5 < time.monotonic() - start < 10
        assert not any(f.requests for f in fakes.values())
        # Nothing of the slow requests is left in Envoy. (Not the processor's
        # streams: the body-limit filter holds an unfinished body before any opens.)
        _wait(
            lambda: (
                envoy_stats(gw, r"^http\.sidegate\.downstream_rq_active$").get(
                    "http.sidegate.downstream_rq_active", 0
                )
                == 0
            ),
            "the slow requests to end",
        )
    finally:
        for s in held:
            s.close()
        gw.stop()


@pytest.fixture
def tight_gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    doc = gateway_doc(fakes)
    doc["circuit_breakers"] = {"max_requests": 2}
    doc["timeouts"] = {"first_byte": "10s"}
    gw = GatewayProcess(doc).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize(
    ("path", "body", "fault"),
    [
        (CHAT, {"model": "gpt-4o"}, {"x-fake-fault-oa": "stall=1"}),
        (MESSAGES, {"model": "claude-haiku", "max_tokens": 5}, {"x-fake-fault-an": "stall=1"}),
    ],
    ids=["openai", "anthropic"],
)
def test_excess_load_is_shed_with_a_503_and_retry_after(
    tight_gateway: GatewayProcess, path: str, body: dict[str, Any], fault: dict[str, str]
) -> None:
    payload = dict(body, messages=[{"role": "user", "content": "hi"}])

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tight_gateway.base, timeout=30) as c:
            return await asyncio.gather(
                *(c.post(path, json=payload, headers=fault) for _ in range(8))
            )

    replies = asyncio.run(burst())
    statuses = sorted(r.status_code for r in replies)
    # Two in flight fit the provider's circuit breaker; the rest are shed at once.
    assert statuses == [200] * 2 + [503] * 6, [r.text for r in replies]
    for r in replies:
        if r.status_code != 503:
            continue
        assert r.headers["retry-after"] == "1"
        err = r.json()
        if path == MESSAGES:
            assert err["type"] == "error" and err["error"]["type"] == "overloaded_error"
        else:
            assert err["error"]["type"] == "server_error"
            assert err["error"]["code"] == "upstream_unavailable"


def test_connections_past_the_limit_are_closed(fakes: dict[str, FakeProvider]) -> None:
    doc = gateway_doc(fakes)
    doc["limits"] = {"max_connections": 20}
    gw = GatewayProcess(doc).start()
    idle = [_open(gw, b"") for _ in range(20)]
    try:
        _wait(
            lambda: (
                envoy_stats(gw, r"^connection_limit\.app\.active_connections$").get(
                    "connection_limit.app.active_connections", 0
                )
                == 20
            ),
            "20 connections to be counted",
        )
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{gw.base}/v1/models", timeout=5)
        stats = envoy_stats(gw, r"^connection_limit\.app\.limited_connections$")
        assert stats["connection_limit.app.limited_connections"] >= 1
        for s in idle:
            s.close()
        idle.clear()
        _wait(
            lambda: (
                httpx.get(f"{gw.base}/v1/models", timeout=5).status_code == 200
                if envoy_stats(gw, r"^connection_limit\.app\.active_connections$").get(
                    "connection_limit.app.active_connections", 0
                )
                < 20
                else False
            ),
            "a free connection slot",
        )
    finally:
        for s in idle:
            s.close()
        gw.stop()


def test_silent_connections_are_closed_so_new_ones_are_served(
    fakes: dict[str, FakeProvider],
) -> None:
    # request_headers starts at a request's first byte: a connection that never
    # sends one was held for Envoy's default idle hour, so a pile of them kept
    # every connection slot and the gateway refused new clients.
    doc = gateway_doc(fakes)
    doc["limits"] = {"max_connections": 20}
    doc["timeouts"] = {"connection_idle": "1s"}
    gw = GatewayProcess(doc).start()
    silent = [_open(gw, b"") for _ in range(20)]
    try:
        for s in silent:
            s.settimeout(15)
            assert s.recv(1) == b"", "a silent connection got bytes instead of being closed"

        def served() -> bool:
            try:
                return httpx.get(f"{gw.base}/v1/models", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        _wait(served, "a new connection to be served with the silent ones still open")
    finally:
        for s in silent:
            s.close()
        gw.stop()


def test_a_processor_outage_is_an_error_in_the_callers_format(
    fakes: dict[str, FakeProvider],
) -> None:
    gw = GatewayProcess(gateway_doc(fakes)).start()
    try:
        asyncio.run_coroutine_threadsafe(gw.server.stop(0), gw.loop).result(5)
        r = httpx.post(f"{gw.base}{CHAT}", json={"model": "fast", "messages": []}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "extproc_unavailable", r.text
        assert r.headers["retry-after"] == "1" and "ext_proc" in r.json()["error"]["message"]
        r = httpx.post(f"{gw.base}{MESSAGES}", json={"model": "claude"}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["type"] == "overloaded_error", r.text
    finally:
        gw.stop()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /anthropic/v1/models HTTP/1.0\r\n\r\n", 426),  # Envoy speaks HTTP/1.1 and up
        (b"GET /anthropic/v1/models HTTP/1.1\r\nhost: x\r\nbad header: y\r\n\r\n", 400),
    ],
    ids=["426", "400"],
)
def test_envoys_protocol_refusals_are_json(
    gateway: GatewayProcess, request_bytes: bytes, status: int
) -> None:
    with _open(gateway, request_bytes) as s:
        got, headers, raw = _read_reply(s)
    assert got == status and headers["content-type"] == "application/json", raw[:300]
    # Refused before Envoy has a request to read the path from: OpenAI's format.
    err = json.loads(raw)["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_request"
    assert err["message"].startswith(
        "sidegate: " + ("Upgrade Required" if status == 426 else "Bad")
    )


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_a_saturated_processor_sheds_with_a_503_and_retry_after(
    fakes: dict[str, FakeProvider], path: str
) -> None:
    gw = GatewayProcess(gateway_doc(fakes)).start()
    try:
        # The processor's event loop stalls past Envoy's wait for a reply
        # (1.5 s with the default body limit), as it does when saturated.
        gw.loop.call_soon_threadsafe(time.sleep, 3)
        start = time.monotonic()
        r = httpx.post(f"{gw.base}{path}", json={"model": "claude", "max_tokens": 5}, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert time.monotonic() - start < 2.9
        body = r.json()
        if path == MESSAGES:
            assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
        else:
            assert body["error"]["code"] == "overloaded"
        assert "did not answer in time" in body["error"]["message"]
        assert not any(f.requests for f in fakes.values())
    finally:
        gw.stop()

"""A stage that raises never leaves a dead stream: the caller gets its own error format.

Before the response started, a 500 local reply in the caller's format; once a
stream started, an error event in the caller's dialect that ends it. Logged
once, with the request id and without the request's text.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import httpx
import openai
import pytest

from extproc import validation
from extproc.devtools.fake_provider import FakeProvider
from extproc.translate.openai_openai import OpenAIToOpenAI
from tests.harness import GatewayProcess, env_keys

CHAT = "/v1/chat/completions"
MESSAGES = "/anthropic/v1/messages"
SECRET_PROMPT = "the-prompt-must-not-be-logged"
DEEP = "[" * 100_000 + "]" * 100_000


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError(f"a bug that quotes {SECRET_PROMPT}")


def _failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "extproc.stages.server" and r.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
def test_policy_stage_exception(
    gateway: GatewayProcess,
    fakes: dict[str, FakeProvider],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    path: str,
) -> None:
    monkeypatch.setattr(validation, "check", _boom)
    body: dict[str, Any] = {
        "model": "claude" if path == MESSAGES else "fast",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": SECRET_PROMPT}],
    }
    with caplog.at_level(logging.ERROR, logger="extproc.stages.server"):
        r = httpx.post(
            gateway.base + path, json=body, headers={"x-request-id": "req-policy-1"}, timeout=10
        )
    assert r.status_code == 500, r.text
    if path == MESSAGES:
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "api_error"
        message = r.json()["error"]["message"]
    else:
        err = r.json()["error"]
        assert err["type"] == "server_error" and err["code"] == "internal_error"
        message = err["message"]
    assert "req-policy-1" in message and SECRET_PROMPT not in r.text
    [record] = _failures(caplog)
    logged = record.getMessage()
    assert "req-policy-1" in logged and "RuntimeError" in logged and "request_body" in logged
    assert SECRET_PROMPT not in logged
    assert not any(f.requests for f in fakes.values())


def test_provider_stage_request_exception(
    gateway: GatewayProcess,
    fakes: dict[str, FakeProvider],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(OpenAIToOpenAI, "request", _boom)
    client = openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="x", max_retries=0)
    with (
        caplog.at_level(logging.ERROR, logger="extproc.stages.server"),
        pytest.raises(openai.InternalServerError) as info,
    ):
        client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": SECRET_PROMPT}]
        )
    assert info.value.code == "internal_error"
    assert len(_failures(caplog)) == 1
    assert not any(f.requests for f in fakes.values())


# -- a provider that answers with hostile bodies ------------------------------------


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    reply: tuple[str, list[bytes]] = ("application/json", [b"{}"])

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        content_type, chunks = self.reply
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def hostile() -> Iterator[tuple[GatewayProcess, type[_Hostile]]]:
    handler = type("Handler", (_Hostile,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    env_keys(SG_TEST_HOSTILE_KEY="sk-hostile")
    keys = [{"env": "SG_TEST_HOSTILE_KEY"}]
    gw = GatewayProcess(
        {
            "providers": {
                "hostile-oa": {"api": "openai", "base_url": base + "/v1", "keys": keys},
                "hostile-an": {"api": "anthropic", "base_url": base, "keys": keys},
            },
            "models": {
                "oa": {"provider": "hostile-oa", "id": "gpt-x"},
                "an": {"provider": "hostile-an", "id": "claude-x"},
            },
        }
    ).start()
    yield gw, handler
    gw.stop()
    server.shutdown()
    server.server_close()


def _sse(event: str, data: Any) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"event: {event}\ndata: {text}\n\n".encode()


_START = _sse(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x",
            "content": [],
            "usage": {"input_tokens": 3, "output_tokens": 0},
        },
    },
)
_BLOCK = _sse(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
)


def _delta(text: str) -> bytes:
    return _sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )


_DEEP_DELTA = _sse(
    "message_delta",
    '{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"x":' + DEEP + "}}",
)
_TAIL = [
    _delta("never seen"),
    _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _sse("message_stop", {"type": "message_stop"}),
]


def test_stream_failure_ends_with_an_openai_error_event(
    hostile: tuple[GatewayProcess, type[_Hostile]], caplog: pytest.LogCaptureFixture
) -> None:
    gw, handler = hostile
    handler.reply = ("text/event-stream", [_START, _BLOCK, _delta("Hel"), _DEEP_DELTA, *_TAIL])
    client = openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0, timeout=10)
    seen: list[str] = []
    done = len(gw.completed) + 1
    with caplog.at_level(logging.ERROR, logger="extproc.stages.server"):
        stream = client.chat.completions.create(
            model="an", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError) as info:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    seen.append(chunk.choices[0].delta.content)
    # Events that shared the failing chunk are lost with it; none after it comes.
    assert seen in ([], ["Hel"])
    assert "sidegate failed to process this request" in info.value.message
    assert len(_failures(caplog)) == 1
    # The provider's 200 went out first, but the request completes as the error it became.
    assert gw.wait_completed(done)[done - 1].status == 500


def test_stream_failure_ends_with_an_anthropic_error_event(
    hostile: tuple[GatewayProcess, type[_Hostile]], caplog: pytest.LogCaptureFixture
) -> None:
    gw, handler = hostile
    handler.reply = ("text/event-stream", [_START, _BLOCK, _delta("Hel"), _DEEP_DELTA, *_TAIL])
    client = anthropic.Anthropic(
        base_url=f"{gw.base}/anthropic", api_key="x", max_retries=0, timeout=10
    )
    seen: list[str] = []
    with (
        caplog.at_level(logging.ERROR, logger="extproc.stages.server"),
        pytest.raises(anthropic.APIStatusError) as info,
        client.messages.stream(
            model="an", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        seen.extend(stream.text_stream)
    # Events that shared the failing chunk are lost with it; none after it comes.
    assert seen in ([], ["Hel"])
    assert "sidegate failed to process this request" in str(info.value)
    assert len(_failures(caplog)) == 1


def test_json_failure_after_headers_is_an_error_body(
    hostile: tuple[GatewayProcess, type[_Hostile]], caplog: pytest.LogCaptureFixture
) -> None:
    gw, handler = hostile
    # An Anthropic JSON body nested too deep to parse: the 200 already went
    # out (full-duplex streaming), so the body says what happened.
    handler.reply = ("application/json", [b'{"type":"message","x":', DEEP.encode(), b"}"])
    with caplog.at_level(logging.ERROR, logger="extproc.stages.server"):
        r = httpx.post(
            gw.base + CHAT,
            json={"model": "an", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
    assert r.json()["error"]["code"] == "internal_error", r.text
    assert len(_failures(caplog)) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_provider_stage_response_headers_exception(
    gateway: GatewayProcess,
    fakes: dict[str, FakeProvider],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stream: bool,
) -> None:
    # Before the response headers went out, Envoy still answers with the
    # upstream filter's local reply in place of the provider's response.
    monkeypatch.setattr(OpenAIToOpenAI, "begin_response", _boom)
    with caplog.at_level(logging.ERROR, logger="extproc.stages.server"):
        r = httpx.post(
            gateway.base + CHAT,
            json={"model": "fast", "messages": [{"role": "user", "content": "x"}], "stream": stream},
            timeout=10,
        )
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "internal_error"
    assert len(_failures(caplog)) == 1
    assert len(fakes["oa"].requests) == 1  # one attempt: a local reply is not retried

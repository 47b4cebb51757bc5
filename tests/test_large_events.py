"""Large provider events on every route: delivered whole, Envoy alive, over the bound a clean error.

A provider streaming one SSE event of 1 MB or more used to kill Envoy (see
README, "Large responses"). Each case sends one event of the given size,
written in 16 KiB pieces as real providers do, then checks that a small
follow-up request on the same gateway still succeeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from extproc.apis import ClientApi
from extproc.config import ProviderApi
from extproc.devtools.fake_provider import FakeProvider
from extproc.translate import exchange_for
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess
from tests.test_passthrough import _ctx

LIMIT = 10 * 1024 * 1024  # limits.max_response_bytes of this module's gateway
SIZES = {"200KB": 200 * 1024, "1MB": 1024 * 1024, "8MB": 8 * 1024 * 1024}
OVER = LIMIT + 1024 * 1024


@pytest.fixture(scope="module")
def big_gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    doc = gateway_doc(fakes)
    doc["limits"] = {"max_response_bytes": LIMIT}
    # Envoy's per-try idle timer (first_byte) counts bytes that passed the
    # provider stage; on a busy 2-core box 8 MB through it can pause over the
    # shared fixture's 1 s. This module is not about failover.
    doc["timeouts"] = dict(doc["timeouts"], first_byte="30s")
    gw = GatewayProcess(doc).start()
    yield gw
    gw.stop()


def _fault(size: int) -> str:
    return f"big_event={size},write_size=16384"


def _openai(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{gw.base}/v1", api_key="app-placeholder", max_retries=0, timeout=60
    )


def _anthropic(gw: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"{gw.base}/anthropic", api_key="app-placeholder", max_retries=0, timeout=60
    )


def _openai_stream(gw: GatewayProcess, model: str, headers: dict[str, str]) -> str:
    stream = _openai(gw).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_headers=headers,
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def _anthropic_stream(gw: GatewayProcess, headers: dict[str, str]) -> str:
    with _anthropic(gw).messages.stream(
        model="claude-sonnet",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers=headers,
    ) as stream:
        return "".join(stream.text_stream)


def _alive(gw: GatewayProcess) -> None:
    assert gw.envoy is not None and gw.envoy.poll() is None, (
        f"Envoy died (exit {gw.envoy and gw.envoy.poll()}):\n{gw.log.read_text()[-3000:]}"
    )
    reply = _openai(gw).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "still there?"}]
    )
    assert "still there?" in (reply.choices[0].message.content or "")


ROUTES: dict[str, Any] = {
    "openai-passthrough": lambda gw, size: _openai_stream(
        gw, "gpt-4o", {"x-fake-fault-oa": _fault(size)}
    ),
    "openai-to-anthropic": lambda gw, size: _openai_stream(
        gw, "claude-sonnet", {"x-fake-fault-an": _fault(size)}
    ),
    "anthropic-passthrough": lambda gw, size: _anthropic_stream(
        gw, {"x-fake-fault-an": _fault(size)}
    ),
}


@pytest.mark.parametrize("size", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("route", list(ROUTES))
def test_large_stream_event(big_gateway: GatewayProcess, route: str, size: int) -> None:
    try:
        text = ROUTES[route](big_gateway, size)
    except (openai.APIError, anthropic.APIError) as e:
        _alive(big_gateway)  # says so if Envoy died
        raise AssertionError(f"{route}: {e!r}\n{big_gateway.log.read_text()[-1500:]}") from e
    assert text.endswith("x" * size), f"{route}: got {len(text)} chars, the large event cut short"
    _alive(big_gateway)


@pytest.mark.parametrize("size", [1024 * 1024, 8 * 1024 * 1024], ids=["1MB", "8MB"])
def test_large_json_bodies(big_gateway: GatewayProcess, size: int) -> None:
    headers = {"x-fake-fault-oa": _fault(size), "x-fake-fault-an": _fault(size)}
    for model in ("gpt-4o", "claude-sonnet"):
        reply = _openai(big_gateway).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=headers
        )
        assert (reply.choices[0].message.content or "").endswith("x" * size), model
    message = _anthropic(big_gateway).messages.create(
        model="claude-sonnet",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers=headers,
    )
    assert message.content[0].type == "text" and message.content[0].text.endswith("x" * size)
    _alive(big_gateway)


def test_translated_event_over_the_bound_is_an_openai_error(big_gateway: GatewayProcess) -> None:
    with pytest.raises(openai.APIError) as err:
        _openai_stream(big_gateway, "claude-sonnet", {"x-fake-fault-an": _fault(OVER)})
    assert "limits.max_response_bytes" in str(err.value)
    assert str(LIMIT) in str(err.value)
    _alive(big_gateway)


def test_translated_json_over_the_bound_is_a_502(big_gateway: GatewayProcess) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        _openai(big_gateway).chat.completions.create(
            model="claude-sonnet",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-fault-an": _fault(OVER)},
        )
    assert err.value.status_code == 502
    assert "limits.max_response_bytes" in err.value.message
    _alive(big_gateway)


def test_error_body_over_the_bound_in_anthropic_format(big_gateway: GatewayProcess) -> None:
    with pytest.raises(anthropic.APIStatusError) as err:
        _anthropic(big_gateway).messages.create(
            model="claude-sonnet",
            max_tokens=100,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-fault-an": f"status=500,big_event={OVER}"},
        )
    assert err.value.status_code == 500
    body = err.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert "limits.max_response_bytes" in body["error"]["message"]
    assert len(err.value.response.content) < 4096  # nothing of the huge body echoed
    _alive(big_gateway)


def test_passthrough_streams_are_not_held(big_gateway: GatewayProcess) -> None:
    # Over the bound, but a pass-through stream never holds a large event: it flows.
    text = _anthropic_stream(big_gateway, {"x-fake-fault-an": _fault(OVER)})
    assert text.endswith("x" * OVER)
    _alive(big_gateway)


def test_a_slow_client_of_a_large_stream(big_gateway: GatewayProcess) -> None:
    # The app reads slower than the provider sends: Envoy buffers the rest. A
    # buffer limit it crosses after the provider finished crashed Envoy.
    size = 24 * 1024 * 1024
    got = 0
    with httpx.stream(
        "POST",
        f"{big_gateway.base}/v1/chat/completions",
        json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-fake-fault-oa": _fault(size)},
        timeout=60,
    ) as resp:
        for chunk in resp.iter_raw(65536):
            got += len(chunk)
            time.sleep(0.002)
    assert got > size
    _alive(big_gateway)


# -- the exchange's bounds, without Envoy -----------------------------------------


def _exchange(client: ClientApi, provider: ProviderApi) -> Any:
    raw = '{"model":"m","messages":[],"stream":true}'
    return exchange_for(_ctx(client, provider, json.loads(raw), raw))


def test_passthrough_json_over_the_bound_flows_and_usage_is_still_read() -> None:
    ex = _exchange(ClientApi.OPENAI_CHAT, ProviderApi.OPENAI)
    ex.begin_response(200, "application/json", max_bytes=100_000)
    body = (
        b'{"choices":[{"message":{"content":"' + b"x" * 300_000 + b'"}}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}'
    )
    out = b"".join(ex.feed(body[i : i + 16384]) for i in range(0, len(body), 16384))
    assert out + ex.finish() == body
    assert len(ex._buf) <= 100_000  # only a bounded tail was kept
    assert ex.usage is not None and ex.usage.output_tokens == 4


def test_anthropic_dialect_error_event() -> None:
    ex = _exchange(ClientApi.ANTHROPIC_MESSAGES, ProviderApi.ANTHROPIC)
    event = ex.stream_error("too big")
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    assert json.loads(event.split(b"data: ", 1)[1]) == {
        "type": "error",
        "error": {"type": "api_error", "message": "too big"},
    }


def test_error_body_over_the_bound_keeps_nothing_of_it() -> None:
    ex = _exchange(ClientApi.OPENAI_CHAT, ProviderApi.ANTHROPIC)
    ex.begin_response(500, "text/html", max_bytes=100_000)
    for _ in range(20):
        assert ex.feed(b"<p>" + b"z" * 16384) == b""
    assert len(ex._buf) == 0
    body = json.loads(ex.finish())
    assert "limits.max_response_bytes" in body["error"]["message"]
    assert "zzz" not in body["error"]["message"]


def test_a_held_event_keeps_bytes_flowing_between_events() -> None:
    ex = _exchange(ClientApi.OPENAI_CHAT, ProviderApi.ANTHROPIC)
    ex.begin_response(200, "text/event-stream", max_bytes=16 << 20)
    delta = {"type": "content_block_delta", "index": 0}
    event = (
        b"event: content_block_delta\ndata: "
        + json.dumps(dict(delta, delta={"type": "text_delta", "text": "y" * (3 << 20)})).encode()
        + b"\n\n"
    )
    outs = [ex.feed(event[i : i + 16384]) for i in range(0, len(event), 16384)]
    comments = [o for o in outs if o == b": sidegate: receiving a large event\n\n"]
    assert len(comments) == 3  # one per MiB held, each between whole events
    last = outs[-1]
    assert last.startswith(b"data: {") and last.endswith(b"\n\n")  # the event itself, whole

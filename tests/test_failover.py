"""Failover and faults: Envoy retries, sidegate translates each attempt for its provider."""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import KEYS
from tests.harness import GatewayProcess


def test_503_fails_over_across_apis(
    client: openai.OpenAI, fakes: dict[str, FakeProvider], gateway: GatewayProcess
) -> None:
    before = len(gateway.completed)
    raw = client.chat.completions.with_raw_response.create(
        model="smart",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-fault-an": "status=503"},
    )
    resp = raw.parse()
    assert raw.headers["x-sidegate-provider"] == "openai-a"
    assert resp.choices[0].message.content == "Hello from oa! You said: hi"
    # Attempt 1 got the Anthropic translation and key, attempt 2 the OpenAI ones,
    # with nothing of attempt 1 left over.
    assert fakes["an"].requests[-1].path == "/v1/messages"
    second = fakes["oa"].requests[-1]
    assert second.path == "/v1/chat/completions"
    assert second.headers["authorization"] == f"Bearer {KEYS['SG_TEST_OA_KEY']}"
    assert "x-api-key" not in second.headers and "anthropic-version" not in second.headers
    assert second.json()["model"] == "gpt-4o-2024-08-06" and "max_tokens" not in second.json()
    state = gateway.wait_completed(before + 1)[-1]
    assert len(state.attempts) == 2 and state.provider == "openai-a"


def test_429_retry_after_is_honoured(client: openai.OpenAI, fakes: dict[str, FakeProvider]) -> None:
    start = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="fast",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-fault-oa": "status=429,retry_after=1"},
    )
    elapsed = time.monotonic() - start
    assert raw.headers["x-sidegate-provider"] == "openai-b"
    assert raw.parse().choices[0].message.content == "Hello from ob! You said: hi"
    # Envoy waits Retry-After (with up to 1.5x jitter); the configured back-off is 10-50 ms.
    assert elapsed >= 0.95
    assert fakes["ob"].requests[-1].headers["authorization"] == f"Bearer {KEYS['SG_TEST_OB_KEY']}"


def test_streamed_failover_gives_one_clean_stream(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="smart",
            stream=True,
            messages=[{"role": "user", "content": "go"}],
            extra_headers={"x-fake-fault-an": "status=529"},
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == "Hello from oa! You said: go"
    )


def test_anthropic_client_fails_over_between_anthropic_providers(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=f"{gateway.base}/anthropic", api_key="x", max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="claude",
        max_tokens=10,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-fault-an": "status=503"},
    )
    assert raw.headers["x-sidegate-provider"] == "anthropic-b"
    msg = raw.parse()
    assert (
        msg.content[0].text == "Hello from bn! You said: hi"
        and msg.model == "claude-sonnet-4-5-backup"
    )


def test_stall_before_first_byte_fails_over(client: openai.OpenAI) -> None:
    # first_byte is 1 s in the test config; the stall is 3 s.
    start = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="fast",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-fault-oa": "stall=3"},
    )
    assert raw.headers["x-sidegate-provider"] == "openai-b"
    assert time.monotonic() - start < 2.5


def test_all_providers_failing_gives_the_last_error_in_caller_format(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(
            model="smart",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-fault-an": "status=503", "x-fake-fault-oa": "status=500"},
        )
    assert e.value.status_code == 500
    assert "fault injected by oa" in e.value.body["message"]


def test_anthropic_error_translated_for_openai_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="smart",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-fault-an": "status=400"},
        )
    assert e.value.body["type"] == "invalid_request_error"
    assert e.value.body["message"] == "fault injected by an"


@pytest.mark.parametrize(
    ("model", "fault"), [("smart", "x-fake-fault-an"), ("fast", "x-fake-fault-oa")]
)
def test_reset_mid_stream_ends_the_stream_with_an_error(
    gateway: GatewayProcess, model: str, fault: str
) -> None:
    # Once bytes reached the client nothing can be retried: Envoy resets the
    # client's stream, so the client sees a protocol error at once, not a hang
    # and not a stream that looks complete.
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST",
            f"{gateway.base}/v1/chat/completions",
            json=body,
            headers={fault: "reset_after=4,chunk_delay=0.1"},
            timeout=10,
        ) as r,
    ):
        assert r.status_code == 200
        for chunk in r.iter_raw():
            received += chunk
    assert received.startswith(b"data: ") and b"[DONE]" not in received
    assert b'"finish_reason":"stop"' not in received.replace(b" ", b"")


def test_reset_before_anything_reached_the_client_fails_over(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smart",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-fault-an": "reset_after=0"},
    )
    assert raw.headers["x-sidegate-provider"] == "openai-a"


def test_anthropic_error_event_mid_stream_becomes_openai_error(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smart",
        stream=True,
        messages=[{"role": "user", "content": "go"}],
        extra_headers={"x-fake-fault-an": "error_event=overloaded_error"},
    )
    with pytest.raises(openai.APIError) as e:
        list(stream)
    assert "Overloaded" in str(e.value)


def test_connect_failure_fails_over(fakes: dict[str, FakeProvider]) -> None:
    from tests.conftest import gateway_doc
    from tests.harness import free_port

    doc = gateway_doc(fakes)
    doc["providers"]["openai-a"]["base_url"] = (
        f"http://127.0.0.1:{free_port()}/v1"  # nobody listens
    )
    gw = GatewayProcess(doc).start()
    try:
        r = httpx.post(
            f"{gw.base}/v1/chat/completions",
            json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert r.status_code == 200 and r.headers["x-sidegate-provider"] == "openai-b"
        doc_all_down = httpx.post(
            f"{gw.base}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert doc_all_down.status_code == 503
        err = doc_all_down.json()["error"]
        assert err["type"] == "server_error" and err["code"] == "upstream_unavailable"
    finally:
        gw.stop()


def test_same_provider_in_two_groups_uses_each_groups_model(
    client: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="downgrade",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-fault-an": "status=529,only_model=claude-sonnet-4-5"},
    )
    assert raw.headers["x-sidegate-model"] == "claude-haiku"
    assert [r.json()["model"] for r in fakes["an"].requests] == [
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
    ]


def test_no_request_state_outlives_its_request(
    client: openai.OpenAI, gateway: GatewayProcess
) -> None:
    faults = ("status=503", "reset_after=0", "chunk_delay=0")
    for fault in faults:
        list(
            client.chat.completions.create(
                model="smart",
                stream=True,
                messages=[{"role": "user", "content": "x"}],
                user=f"leak-{fault}",
                extra_headers={"x-fake-fault-an": fault},
            )
        )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        mine = [s for s in gateway.completed if str(s.body.get("user", "")).startswith("leak-")]
        if len(mine) == len(faults) and not gateway.gateway.requests:
            break
        time.sleep(0.01)
    assert len(mine) == len(faults) and all(s.usage is not None for s in mine)
    assert len(gateway.gateway.requests) == 0

"""Traces and metrics of real requests, exported with OTLP to an in-process receiver.

A real gateway (Envoy and the ext_proc), the official SDKs as clients, fake
providers; the receiver (``tests/otlp_receiver.py``) speaks OTLP over gRPC
and HTTP like a collector.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import KEYS, gateway_doc
from tests.harness import GatewayProcess, wait_until
from tests.otlp_receiver import OtlpReceiver, Point, Span

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


def telemetry_doc(fakes: dict[str, FakeProvider], endpoint: str, **export: Any) -> dict[str, Any]:
    doc = gateway_doc(fakes)
    doc["quotas"] = [{"name": "tiny", "models": ["gpt-4o-b"], "requests": 1, "window": "1h"}]
    doc["telemetry"] = {
        "service_name": "sidegate-test",
        "export": {"endpoint": endpoint, "protocol": "grpc", **export},
        "traces": {"schedule_delay": "50ms"},
        "metrics": {"export_interval": "200ms"},
        "content": {"routes": ["claude"]},
    }
    return doc


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def traced(fakes: dict[str, FakeProvider], otlp: OtlpReceiver) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(telemetry_doc(fakes, otlp.grpc_endpoint)).start()
    yield gw
    gw.stop()


@pytest.fixture
def oa(traced: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{traced.base}/v1", api_key="app-placeholder", max_retries=0
    ) as c:
        yield c


def _by_request(otlp: OtlpReceiver, request_id: str) -> tuple[Span, list[Span]]:
    """The request's span and its attempt spans (in attempt order), once exported."""
    [root] = otlp.wait_spans(lambda s: s.attributes.get("sidegate.request_id") == request_id)
    attempts = root.attributes["sidegate.attempts"]
    children = otlp.wait_spans(
        lambda s: s.parent_span_id == root.span_id and s.trace_id == root.trace_id, attempts
    )
    return root, sorted(children, key=lambda s: s.attributes["sidegate.attempt"])


def _rid() -> dict[str, str]:
    """A request id of the test's own: its spans are found by it, whatever else completes."""
    return {"x-request-id": f"test-{uuid.uuid4().hex}"}


def test_plain_request_continues_the_client_trace(
    traced: GatewayProcess, otlp: OtlpReceiver, oa: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    rid = _rid()
    resp = oa.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.25,
        max_tokens=30,
        user="alice",
        extra_headers={"traceparent": TRACEPARENT, "tracestate": "vendor=1", **rid},
    )
    root, [attempt] = _by_request(otlp, rid["x-request-id"])
    assert root.name == "chat gpt-4o" and root.kind == 3  # SPAN_KIND_CLIENT
    assert (root.trace_id, root.parent_span_id) == (CLIENT_TRACE, CLIENT_SPAN)
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o" and a["sidegate.route"] == "gpt-4o"
    assert a["gen_ai.response.model"] == resp.model and a["gen_ai.response.id"] == resp.id
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert resp.usage is not None
    assert a["gen_ai.usage.input_tokens"] == resp.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == resp.usage.completion_tokens
    assert a["gen_ai.request.temperature"] == 0.25 and a["gen_ai.request.max_tokens"] == 30
    assert a["server.address"] == "127.0.0.1" and a["http.response.status_code"] == 200
    assert a["sidegate.caller.user"] == "alice" and a["sidegate.provider"] == "openai-a"
    # Priced at the config's 2.5 / 10 USD per million tokens.
    expected = (resp.usage.prompt_tokens * 2.5 + resp.usage.completion_tokens * 10) / 1e6
    # (the quota code's pricing: micro-dollars, rounded up per token kind)
    assert a["sidegate.cost_usd"] == pytest.approx(expected, abs=2e-6)
    assert "error.type" not in a and root.status_code == 0
    assert "gen_ai.input.messages" not in a  # this route records no content
    assert root.resource["service.name"] == "sidegate-test"
    # The attempt: a child span whose id the provider got as its parent.
    assert attempt.name == "sidegate.attempt" and attempt.kind == 3
    assert attempt.attributes["gen_ai.request.model"] == "gpt-4o-2024-08-06"
    assert attempt.attributes["http.response.status_code"] == 200
    got = fakes["oa"].requests[-1].headers
    assert got["traceparent"] == f"00-{CLIENT_TRACE}-{attempt.span_id}-03"
    assert got["tracestate"] == "vendor=1"
    assert root.start_ns <= attempt.start_ns <= attempt.end_ns <= root.end_ns


def test_new_trace_when_the_client_sends_none(
    traced: GatewayProcess, otlp: OtlpReceiver, oa: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    rid = _rid()
    oa.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_headers=rid
    )
    root, [attempt] = _by_request(otlp, rid["x-request-id"])
    assert root.parent_span_id == "" and root.trace_id != CLIENT_TRACE
    got = fakes["oa"].requests[-1].headers
    assert got["traceparent"] == f"00-{root.trace_id}-{attempt.span_id}-03"
    assert "tracestate" not in got


def test_parent_based_sampling_follows_the_client(
    traced: GatewayProcess, otlp: OtlpReceiver, oa: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    """A client trace sampled out stays out: no spans, and the provider is told so."""
    unsampled = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"
    rid = _rid()
    oa.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"traceparent": unsampled, **rid},
    )
    version, trace_id, span_id, flags = fakes["oa"].requests[-1].headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "02")  # not sampled
    assert span_id != CLIENT_SPAN
    # A sampled request sent after it is exported: the unsampled one never was.
    after = _rid()
    oa.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], extra_headers=after
    )
    _by_request(otlp, after["x-request-id"])
    assert not [s for s in otlp.spans() if s.attributes.get("sidegate.request_id") == rid["x-request-id"]]


def test_streamed_span_ends_with_the_stream(
    traced: GatewayProcess, otlp: OtlpReceiver, oa: openai.OpenAI
) -> None:
    rid = _rid()
    start = time.time_ns()
    stream = oa.chat.completions.create(
        model="gpt-4o",
        stream=True,
        messages=[{"role": "user", "content": "go"}],
        extra_headers={"x-fake-fault-oa": "chunk_delay=0.05", **rid},
    )
    chunks = list(stream)
    done = time.time_ns()
    assert chunks
    root, [_attempt] = _by_request(otlp, rid["x-request-id"])
    a = root.attributes
    ttfc = a["sidegate.time_to_first_chunk"]
    duration = (root.end_ns - root.start_ns) / 1e9
    # Several 50 ms gaps between events: the span lasts the stream, not its first byte.
    assert 0 < ttfc < duration and duration >= 0.1
    assert start - 5_000_000 <= root.start_ns and root.end_ns <= done + 50_000_000
    assert a["sidegate.stream"] is True and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.finish_reasons"] == ["stop"]


def test_translated_request(
    traced: GatewayProcess, otlp: OtlpReceiver, oa: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    rid = _rid()
    resp = oa.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "hi"}], extra_headers=rid
    )
    root, [attempt] = _by_request(otlp, rid["x-request-id"])
    a = root.attributes
    assert root.name == "chat smart" and a["sidegate.api"] == "openai-chat"
    assert a["gen_ai.provider.name"] == "anthropic" and a["sidegate.provider"] == "anthropic-a"
    assert a["gen_ai.response.model"] == "claude-sonnet-4-5"
    assert a["gen_ai.response.id"].startswith("msg_") and resp.id == a["gen_ai.response.id"]
    assert a["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert attempt.attributes["gen_ai.provider.name"] == "anthropic"
    got = fakes["an"].requests[-1].headers
    assert got["traceparent"].split("-")[2] == attempt.span_id


def test_failover_has_two_attempt_spans(
    traced: GatewayProcess, otlp: OtlpReceiver, oa: openai.OpenAI, fakes: dict[str, FakeProvider]
) -> None:
    rid = _rid()
    oa.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={
            "x-fake-fault-an": "status=503,retry_after=0", "traceparent": TRACEPARENT, **rid
        },
    )
    root, [first, second] = _by_request(otlp, rid["x-request-id"])
    assert root.attributes["sidegate.attempts"] == 2 and root.status_code == 0
    assert first.attributes["sidegate.provider"] == "anthropic-a"
    assert first.attributes["http.response.status_code"] == 503
    assert first.attributes["error.type"] == "503" and first.status_code == 2
    assert second.attributes["sidegate.provider"] == "openai-a"
    assert second.attributes["sidegate.retry.reason"] == "503"
    assert second.attributes["sidegate.retry.after"] == "0"
    assert second.attributes["sidegate.failover"] is True
    assert second.attributes["http.request.resend_count"] == 1
    # Each provider saw its own attempt's span as the parent, in the client's trace.
    assert fakes["an"].requests[-1].headers["traceparent"] == f"00-{CLIENT_TRACE}-{first.span_id}-03"
    assert fakes["oa"].requests[-1].headers["traceparent"] == f"00-{CLIENT_TRACE}-{second.span_id}-03"
    assert first.end_ns <= second.start_ns


def _cached_request(base: str, rid: dict[str, str]) -> None:
    with anthropic.Anthropic(base_url=f"{base}/anthropic", api_key="x", max_retries=0) as client:
        client.messages.create(
            model="claude",
            max_tokens=20,
            messages=[{"role": "user", "content": "cached"}],
            extra_headers={"x-fake-fault-an": "cache_read=100,cache_creation=20", **rid},
        )


def test_cache_tokens_released_names(traced: GatewayProcess, otlp: OtlpReceiver) -> None:
    rid = _rid()
    _cached_request(traced.base, rid)
    root, _ = _by_request(otlp, rid["x-request-id"])
    assert root.attributes["gen_ai.usage.cache_read.input_tokens"] == 100
    assert root.attributes["gen_ai.usage.cache_creation.input_tokens"] == 20
    assert "gen_ai.usage.cache_write.input_tokens" not in root.attributes


def test_refusal_span(traced: GatewayProcess, otlp: OtlpReceiver, oa: openai.OpenAI) -> None:
    rid = _rid()
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(
            model="no-such-model",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"traceparent": TRACEPARENT, **rid},
        )
    root, attempts = _by_request(otlp, rid["x-request-id"])
    assert attempts == [] and root.name == "chat no-such-model"
    assert root.trace_id == CLIENT_TRACE and root.parent_span_id == CLIENT_SPAN
    a = root.attributes
    assert a["error.type"] == "model_not_found" and a["http.response.status_code"] == 404
    assert root.status_code == 2 and root.status_message == "model_not_found"


def test_refusal_before_a_model_is_read(traced: GatewayProcess, otlp: OtlpReceiver) -> None:
    rid = _rid()
    r = httpx.post(
        f"{traced.base}/v1/chat/completions",
        content=b"not json",
        headers={"content-type": "text/plain", **rid},
        timeout=5,
    )
    assert r.status_code == 415
    root, attempts = _by_request(otlp, rid["x-request-id"])
    assert root.name == "chat" and "gen_ai.request.model" not in root.attributes
    assert root.attributes["error.type"] == "unsupported_media_type" and attempts == []
    assert root.attributes["url.path"] == "/v1/chat/completions"


def test_quota_refusal_span(traced: GatewayProcess, otlp: OtlpReceiver, oa: openai.OpenAI) -> None:
    oa.chat.completions.create(model="gpt-4o-b", messages=[{"role": "user", "content": "x"}])
    rid = _rid()
    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(
            model="gpt-4o-b", messages=[{"role": "user", "content": "x"}], extra_headers=rid
        )
    root, _ = _by_request(otlp, rid["x-request-id"])
    assert root.attributes["sidegate.quota.refused"] == "tiny"
    assert root.attributes["error.type"] == "rate_limit_exceeded"


def test_content_only_where_the_route_opts_in(
    traced: GatewayProcess, otlp: OtlpReceiver
) -> None:
    rid = _rid()
    with anthropic.Anthropic(
        base_url=f"{traced.base}/anthropic", api_key="x", max_retries=0
    ) as client:
        msg = client.messages.create(
            model="claude",
            max_tokens=50,
            system="be brief",
            messages=[{"role": "user", "content": "tell me about otters"}],
            extra_headers={"x-fake-fault-an": "echo_key=1", **rid},
        )
    root, _ = _by_request(otlp, rid["x-request-id"])
    a = root.attributes
    inputs = json.loads(a["gen_ai.input.messages"])
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "tell me about otters"}]}]
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
    [output] = json.loads(a["gen_ai.output.messages"])
    assert output["role"] == "assistant" and output["finish_reason"] == msg.stop_reason
    text = output["parts"][0]["content"]
    assert text == "".join(b.text for b in msg.content if b.type == "text")
    # The fake quoted its key in the answer: scrubbed in the span as for the client.
    assert KEYS["SG_TEST_AN_KEY"] not in text and "****" in text


def test_streamed_content(traced: GatewayProcess, otlp: OtlpReceiver) -> None:
    rid = _rid()
    with anthropic.Anthropic(
        base_url=f"{traced.base}/anthropic", api_key="x", max_retries=0
    ) as client, client.messages.stream(
        model="claude",
        max_tokens=50,
        messages=[{"role": "user", "content": "stream it"}],
        extra_headers=rid,
    ) as stream:
        text = stream.get_final_text()
    root, _ = _by_request(otlp, rid["x-request-id"])
    [output] = json.loads(root.attributes["gen_ai.output.messages"])
    assert output["parts"] == [{"type": "text", "content": text}] and text


def test_a_key_in_a_prompt_is_not_recorded(traced: GatewayProcess, otlp: OtlpReceiver) -> None:
    rid = _rid()
    key = KEYS["SG_TEST_BN_KEY"]
    with anthropic.Anthropic(
        base_url=f"{traced.base}/anthropic", api_key="x", max_retries=0
    ) as client:
        client.messages.create(
            model="claude",
            max_tokens=20,
            messages=[{"role": "user", "content": f"is {key} a key?"}],
            extra_headers=rid,
        )
    root, _ = _by_request(otlp, rid["x-request-id"])
    inputs = root.attributes["gen_ai.input.messages"]
    assert key not in inputs and "is " + "*" * len(key) + " a key?" in inputs


def test_no_key_in_any_span(traced: GatewayProcess, otlp: OtlpReceiver) -> None:
    spans = otlp.spans()
    assert spans
    dump = json.dumps([s.__dict__ for s in spans])
    for key in KEYS.values():
        assert key not in dump and key[-8:] not in dump


def _sum(points: list[Point], metric: str, **attrs: Any) -> float:
    return sum(
        p.value
        for p in points
        if p.metric == metric and all(p.attributes.get(k) == v for k, v in attrs.items())
    )


def _count(points: list[Point], metric: str, **attrs: Any) -> int:
    return sum(
        p.count
        for p in points
        if p.metric == metric and all(p.attributes.get(k) == v for k, v in attrs.items())
    )


def test_metrics_after_n_requests_add_up_to_n(
    traced: GatewayProcess, otlp: OtlpReceiver, oa: openai.OpenAI
) -> None:
    route = {"sidegate.route": "fast"}
    base = otlp.latest_points()
    start_requests = _sum(base, "sidegate.requests", **route)
    start_ops = _count(base, "gen_ai.client.operation.duration", **{"gen_ai.request.model": "fast"})
    start_tokens = _count(base, "gen_ai.client.token.usage", **{"gen_ai.request.model": "fast"})
    start_retries = _sum(base, "sidegate.retries", **{"sidegate.provider": "openai-a"})
    n = 7
    for i in range(n):
        headers = {"x-fake-fault-oa": "status=429,retry_after=0"} if i == 0 else {}
        oa.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": f"n{i}"}], extra_headers=headers
        )
    points = otlp.wait_metric(
        lambda p: _sum(p, "sidegate.requests", **route) >= start_requests + n
    )
    assert _sum(points, "sidegate.requests", **route) == start_requests + n
    assert _sum(points, "sidegate.requests", **route, **{"sidegate.outcome": "ok"}) >= n
    fast = {"gen_ai.request.model": "fast"}
    assert _count(points, "gen_ai.client.operation.duration", **fast) == start_ops + n
    # One input and one output point per request.
    assert _count(points, "gen_ai.client.token.usage", **fast) == start_tokens + 2 * n
    retried = {"sidegate.provider": "openai-a", "sidegate.retry.reason": "429"}
    assert _sum(points, "sidegate.retries", **retried) >= 1
    assert _sum(points, "sidegate.retries", **{"sidegate.provider": "openai-a"}) == start_retries + 1
    # Bounded dimensions: no request ids or user ids among the attributes.
    for p in points:
        assert not any(k.startswith("sidegate.caller") or k == "sidegate.request_id" for k in p.attributes)
    assert any(p.metric == "sidegate.requests.in_flight" for p in points)
    assert _sum(points, "sidegate.cost.usd") > 0


def test_refusals_are_counted(traced: GatewayProcess, otlp: OtlpReceiver, oa: openai.OpenAI) -> None:
    base = otlp.latest_points()
    before = _sum(base, "sidegate.requests", **{"sidegate.outcome": "model_not_found"})
    r = httpx.post(
        f"{traced.base}/v1/chat/completions",
        json={"model": "unknown-model-x", "messages": [{"role": "user", "content": "x"}]},
        timeout=5,
    )
    assert r.status_code == 404
    points = otlp.wait_metric(
        lambda p: _sum(p, "sidegate.requests", **{"sidegate.outcome": "model_not_found"}) > before
    )
    [p] = [
        p for p in points
        if p.metric == "sidegate.requests" and p.attributes["sidegate.outcome"] == "model_not_found"
    ]
    # A made-up model name never becomes a series of its own.
    assert p.attributes["sidegate.route"] == "_other"


def test_http_protobuf_export(fakes: dict[str, FakeProvider]) -> None:
    with OtlpReceiver() as otlp:
        doc = telemetry_doc(fakes, otlp.http_endpoint)
        doc["telemetry"]["export"]["protocol"] = "http/protobuf"
        gw = GatewayProcess(doc).start()
        try:
            with openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0) as client:
                client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "x"}]
                )
            [span] = otlp.wait_spans(lambda s: s.name == "chat gpt-4o")
            assert span.attributes["sidegate.attempts"] == 1
            otlp.wait_metric(lambda p: _sum(p, "sidegate.requests") >= 1)
        finally:
            gw.stop()


def test_latest_semconv_names_on_opt_in(
    fakes: dict[str, FakeProvider], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http,gen_ai_latest_experimental")
    with OtlpReceiver() as otlp:
        gw = GatewayProcess(telemetry_doc(fakes, otlp.grpc_endpoint)).start()
        try:
            with openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0) as client:
                resp = client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "x"}]
                )
            assert resp.usage is not None
            points = otlp.wait_metric(
                lambda p: _sum(p, "gen_ai.client.inference.usage.input_tokens") > 0
            )
            names = {p.metric for p in points}
            assert "gen_ai.client.token.usage" not in names
            assert "gen_ai.client.operation.duration" not in names
            assert "gen_ai.client.inference.duration" in names
            assert _sum(points, "gen_ai.client.inference.usage.input_tokens") == resp.usage.prompt_tokens
            assert _sum(points, "gen_ai.client.inference.usage.output_tokens") == resp.usage.completion_tokens
            [p] = [p for p in points if p.metric == "gen_ai.client.inference.usage.input_tokens"]
            assert p.attributes["gen_ai.token.modality"] == "unknown"
            rid = _rid()
            _cached_request(gw.base, rid)
            root, _ = _by_request(otlp, rid["x-request-id"])
            assert root.attributes["gen_ai.usage.cache_write.input_tokens"] == 20
            assert "gen_ai.usage.cache_creation.input_tokens" not in root.attributes
        finally:
            gw.stop()


def test_disabled_telemetry_exports_nothing(fakes: dict[str, FakeProvider]) -> None:
    with OtlpReceiver() as otlp:
        doc = telemetry_doc(fakes, otlp.grpc_endpoint)
        doc["telemetry"]["enabled"] = False
        gw = GatewayProcess(doc).start()
        try:
            tel = gw.gateway.telemetry
            assert tel.tracing is None and tel.metrics is None
            with openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0) as client:
                client.chat.completions.create(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": "x"}],
                    extra_headers={"traceparent": TRACEPARENT},
                )
            # The client's own traceparent still reaches the provider, untouched.
            assert fakes["oa"].requests[-1].headers["traceparent"] == TRACEPARENT
            record = gw.wait_completed(1)[-1]
            assert record.traceparent is None and record.trace_id == 0
        finally:
            gw.stop()
        assert otlp.received.calls == {"traces": 0, "metrics": 0, "logs": 0}


def _latencies(base: str, n: int) -> list[float]:
    out = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for i in range(n):
            start = time.monotonic()
            r = client.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o", "messages": [{"role": "user", "content": f"m{i}"}]},
            )
            out.append(time.monotonic() - start)
            assert r.status_code == 200, r.text
    return out


@pytest.mark.parametrize("collector", ["down", "stalled"])
def test_collector_down_or_stalled_costs_requests_nothing(
    fakes: dict[str, FakeProvider], collector: str
) -> None:
    n = 200
    with OtlpReceiver() as otlp:
        if collector == "down":
            otlp.stop()  # nothing listens on its ports any more
        else:
            otlp.stall()  # accepts every export, answers none
        doc = telemetry_doc(fakes, otlp.grpc_endpoint, timeout="30s")
        doc["telemetry"]["traces"] = {"schedule_delay": "10ms", "max_queue_size": 64,
                                      "max_export_batch_size": 16}  # fmt: skip
        gw = GatewayProcess(doc).start()
        try:
            latencies = _latencies(gw.base, n)
            tracing = gw.gateway.telemetry.tracing
            assert tracing is not None
            wait_until(lambda: len(gw.completed) >= n, f"{n} completed requests")
            dropped = tracing.dropped
        finally:
            otlp.resume()
            gw.stop()
    latencies.sort()
    # Every request served, none waiting on the collector: an export blocked
    # for 30 s (stalled) or failing and backing off (down) shows in no request.
    assert latencies[-1] < 1.0, latencies[-5:]
    assert latencies[int(n * 0.99) - 1] < 0.25, latencies[-5:]
    if collector == "stalled":
        # 200 requests, a queue of 64, one batch of 16 held by the stalled export.
        assert dropped >= n - 64 - 16 - 16, dropped


def test_extproc_errors_are_counted_and_traced(
    traced: GatewayProcess, otlp: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from extproc import validation

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    before = _sum(otlp.latest_points(), "sidegate.extproc.errors", **{"sidegate.stage": "policy"})
    monkeypatch.setattr(validation, "check", boom)
    rid = _rid()
    r = httpx.post(
        f"{traced.base}/v1/chat/completions",
        json={"model": "fast", "messages": [{"role": "user", "content": "x"}]},
        headers=rid,
        timeout=10,
    )
    assert r.status_code == 500
    root, _ = _by_request(otlp, rid["x-request-id"])
    assert root.attributes["error.type"] == "internal_error" and root.status_code == 2
    otlp.wait_metric(
        lambda p: _sum(p, "sidegate.extproc.errors", **{"sidegate.stage": "policy"}) == before + 1
    )

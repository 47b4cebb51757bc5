"""The request record: every request the policy stage sees reaches the completion listeners once.

A real gateway (Envoy and the ext_proc), the official SDKs as clients, fake
providers. The listener here declares what telemetry and audit read
(``Needs.CALLER | TRACE_CONTEXT | RESPONSE_META``), so the stages fill it in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from extproc.devtools.fake_provider import FakeProvider
from extproc.pipeline import Needs
from extproc.quota.enforcer import Reservation
from extproc.state import RequestState
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess, wait_until

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Recorder:
    needs = Needs.CALLER | Needs.TRACE_CONTEXT | Needs.RESPONSE_META

    def __init__(self) -> None:
        self.records: list[RequestState] = []

    def __call__(self, state: RequestState) -> None:
        self.records.append(state)

    def wait(self, count: int) -> list[RequestState]:
        wait_until(lambda: len(self.records) >= count, f"{count} request records")
        return self.records


@pytest.fixture(scope="module")
def recorded(fakes: dict[str, FakeProvider]) -> Iterator[tuple[GatewayProcess, Recorder]]:
    doc = gateway_doc(fakes)
    doc["quotas"] = [{"name": "tiny", "models": ["gpt-4o-b"], "requests": 1, "window": "1h"}]
    doc["identity"] = {"tenant": "acme"}
    gw = GatewayProcess(doc)
    recorder = Recorder()
    gw.gateway.on_complete(recorder)
    gw.start()
    yield gw, recorder
    gw.stop()


@pytest.fixture
def rec(recorded: tuple[GatewayProcess, Recorder]) -> Recorder:
    return recorded[1]


@pytest.fixture
def oa(recorded: tuple[GatewayProcess, Recorder]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{recorded[0].base}/v1", api_key="app-placeholder", max_retries=0
    ) as c:
        yield c


def _one(rec: Recorder, before: int) -> RequestState:
    records = rec.wait(before + 1)
    # Settle: a second record for the same request would come right after the first.
    time.sleep(0.1)
    assert len(records) == before + 1, [r.id for r in records[before:]]
    return records[before]


def test_plain_request_record(rec: Recorder, oa: openai.OpenAI) -> None:
    before = len(rec.records)
    wall = time.time()
    resp = oa.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        temperature=0.5,
        max_tokens=20,
        user="alice",
        extra_headers={"traceparent": TRACEPARENT, "tracestate": "k=v"},
    )
    r = _one(rec, before)
    assert r.answered is None and r.plan is not None and r.plan.route == "gpt-4o"
    assert r.path == "/v1/chat/completions" and r.requested_model == "gpt-4o"
    assert r.final_status == 200 and r.error_type is None
    assert r.caller is not None and (r.caller.user, r.caller.tenant) == ("alice", "acme")
    assert (r.traceparent, r.tracestate) == (TRACEPARENT, "k=v")
    assert r.body["temperature"] == 0.5 and r.body["max_tokens"] == 20
    assert r.response_id == resp.id and r.response_model == resp.model
    assert r.finish_reasons == ("stop",)
    assert r.usage is not None and r.usage.input_tokens == resp.usage.prompt_tokens  # type: ignore[union-attr]
    [a] = r.attempts
    assert (a.provider, a.model, a.model_id, a.status, a.error) == (
        "openai-a",
        "gpt-4o",
        "gpt-4o-2024-08-06",
        200,
        None,
    )
    assert a.responded is not None and a.ended is not None and r.ended is not None
    assert r.started <= a.started <= a.responded <= a.ended <= r.ended
    assert abs(r.started_wall - wall) < 5 and r.wall(r.ended) >= r.started_wall
    assert r.first_token is None  # not a stream


def test_stream_record_has_time_to_first_token(rec: Recorder, oa: openai.OpenAI) -> None:
    before = len(rec.records)
    chunks = list(
        oa.chat.completions.create(
            model="smart", stream=True, messages=[{"role": "user", "content": "go"}]
        )
    )
    assert chunks
    r = _one(rec, before)
    assert r.stream and r.provider == "anthropic-a" and r.status == 200
    assert r.first_token is not None and r.ended is not None
    assert r.started < r.first_token <= r.ended
    # Translated: the provider's own id, model and stop reason.
    assert r.response_id and r.response_id.startswith("msg_")
    assert r.response_model == "claude-sonnet-4-5" and r.finish_reasons == ("end_turn",)
    assert r.usage is not None and r.usage.output_tokens > 0


def test_openai_stream_finish_reason(rec: Recorder, oa: openai.OpenAI) -> None:
    before = len(rec.records)
    chunks = list(
        oa.chat.completions.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": "go"}]
        )
    )
    r = _one(rec, before)
    assert r.finish_reasons == ("stop",) and r.response_id == chunks[0].id
    assert r.first_token is not None


def test_failover_records_each_attempt(rec: Recorder, oa: openai.OpenAI) -> None:
    before = len(rec.records)
    oa.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-fault-an": "status=503,retry_after=0"},
    )
    r = _one(rec, before)
    first, second = r.attempts
    assert (first.provider, first.status, first.failed) == ("anthropic-a", 503, True)
    assert first.retry_after == "0" and first.outcome == "503"
    assert (second.provider, second.status, second.failed) == ("openai-a", 200, False)
    assert first.ended is not None and first.ended <= second.started
    assert r.provider == "openai-a" and r.status == 200 and r.error_type is None


def test_timeout_attempt(rec: Recorder, oa: openai.OpenAI) -> None:
    before = len(rec.records)
    oa.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-fault-oa": "stall=3"},
    )
    r = _one(rec, before)
    first, second = r.attempts
    assert (first.status, first.error, first.outcome) == (None, "timeout", "timeout")
    assert second.status == 200 and r.error_type is None


def test_refusals_are_recorded(
    recorded: tuple[GatewayProcess, Recorder], rec: Recorder, oa: openai.OpenAI
) -> None:
    gw = recorded[0]
    cases: list[tuple[Any, int, str]] = []
    before = len(rec.records)
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    cases.append(("nope", 404, "model_not_found"))
    with pytest.raises(openai.BadRequestError):
        oa.chat.completions.create(model="gpt-4o", messages=[])
    cases.append(("gpt-4o", 400, "invalid_request"))
    # The quota allows one request an hour: the second is refused by it.
    oa.chat.completions.create(model="gpt-4o-b", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(model="gpt-4o-b", messages=[{"role": "user", "content": "x"}])
    cases.append(("gpt-4o-b", 200, ""))
    cases.append(("gpt-4o-b", 429, "rate_limit_exceeded"))
    r415 = httpx.post(f"{gw.base}/v1/chat/completions", content=b"x", timeout=5)
    assert r415.status_code == 415
    cases.append(("", 415, "unsupported_media_type"))
    records = rec.wait(before + len(cases))
    time.sleep(0.1)
    got = records[before:]
    assert len(got) == len(cases)
    for r, (model, status, code) in zip(got, cases, strict=True):
        assert (r.requested_model, r.final_status) == (model, status), r
        if status == 200:
            assert isinstance(r.reservation, Reservation) and r.reservation.quotas == ("tiny",)
            continue
        assert r.answered is not None and r.answered.code == code and r.plan is None
        assert r.error_type == code and r.ended is not None and r.attempts == []
    quota_refusal = got[3]
    assert quota_refusal.answered is not None and quota_refusal.answered.quota == "tiny"
    assert quota_refusal.answered.retry_after is not None
    assert quota_refusal.caller is not None and quota_refusal.caller.tenant == "acme"


def test_anthropic_record(recorded: tuple[GatewayProcess, Recorder], rec: Recorder) -> None:
    before = len(rec.records)
    with anthropic.Anthropic(
        base_url=f"{recorded[0].base}/anthropic", api_key="x", max_retries=0
    ) as client:
        msg = client.messages.create(
            model="claude",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            metadata={"user_id": "bob"},
        )
    r = _one(rec, before)
    assert r.response_id == msg.id and r.finish_reasons == (msg.stop_reason,)
    assert r.caller is not None and r.caller.user == "bob"

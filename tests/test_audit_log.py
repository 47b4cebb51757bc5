"""The audit log of a real gateway: a record per request of every kind, content only on opt-in.

Real Envoy and ext_proc (the harness), the official SDKs as clients, fake
providers. The log is in the durable mode, so each record must be on disk
when the client has its response: the records are read without waiting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from extproc.audit.file_sink import rotated_files
from extproc.audit.verify import verify
from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import KEYS, gateway_doc
from tests.harness import GatewayProcess

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class AuditFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def files(self) -> list[Path]:
        return [p for _, p in rotated_files(self.path)] + [self.path]

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for f in self.files() for line in f.read_bytes().splitlines()]

    def requests(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["kind"] == "request"]

    def last(self) -> dict[str, Any]:
        """The newest request record, already on disk (the durable mode wrote it first)."""
        found = self.requests()
        assert found, "no request record on disk"
        return found[-1]


@pytest.fixture(scope="module")
def audited(
    fakes: dict[str, FakeProvider], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, AuditFile]]:
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    doc = gateway_doc(fakes)
    doc["quotas"] = [{"name": "tiny", "models": ["gpt-4o-b"], "requests": 1, "window": "1h"}]
    doc["identity"] = {"tenant": "acme"}
    doc["audit"] = {
        # Small files: a few dozen records rotate across several of them.
        "file": {"path": str(path), "max_bytes": 8192, "max_files": 50},
        "durability": "sync",
        "content": {"routes": ["fast"], "max_bytes": 4096},
    }
    gw = GatewayProcess(doc).start()
    yield gw, AuditFile(path)
    gw.stop()


@pytest.fixture
def log(audited: tuple[GatewayProcess, AuditFile]) -> AuditFile:
    return audited[1]


@pytest.fixture
def oa(audited: tuple[GatewayProcess, AuditFile]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{audited[0].base}/v1", api_key="app-placeholder", max_retries=0
    ) as c:
        yield c


def test_plain_request(log: AuditFile, oa: openai.OpenAI) -> None:
    oa.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={
            "x-sidegate-user": "ann",
            "traceparent": TRACEPARENT,
            "x-request-id": "audit-plain-1",
        },
    )
    r = log.last()  # no waiting: the record was written before the response ended
    assert r["request_id"] == "audit-plain-1"
    assert r["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert r["caller"] == {"user": "ann", "tenant": "acme", "workload": r["caller"]["workload"]}
    assert r["client"] == {"api": "openai-chat", "path": "/v1/chat/completions", "stream": False}
    assert r["model"] == {"requested": "gpt-4o", "route": "gpt-4o"}
    [attempt] = r["attempts"]
    assert attempt["provider"] == "openai-a" and attempt["model_id"] == "gpt-4o-2024-08-06"
    assert attempt["status"] == 200 and attempt["latency_ms"] > 0
    assert r["answer"]["provider"] == "openai-a" and r["answer"]["model"] == "gpt-4o"
    assert r["answer"]["model_id"] == "gpt-4o-2024-08-06"
    assert r["usage"]["input_tokens"] > 0 and r["usage"]["output_tokens"] > 0
    assert r["cost_usd"] > 0
    assert r["outcome"] == {"status": 200, "error": None, "by": "provider"}
    assert "content" not in r, "gpt-4o does not opt in to content"
    assert r["time"] >= r["start"] and r["duration_ms"] > 0


def test_streamed_request(log: AuditFile, oa: openai.OpenAI) -> None:
    chunks = list(
        oa.chat.completions.create(
            model="gpt-4o",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "stream"}],
        )
    )
    assert chunks
    r = log.last()
    assert r["client"]["stream"] is True
    assert r["outcome"]["status"] == 200 and r["usage"]["output_tokens"] > 0
    assert r["answer"]["finish_reasons"] == ["stop"]


@pytest.mark.parametrize("model", ["gpt-4o", "claude"], ids=["passthrough", "translated"])
def test_a_stream_waits_for_its_record_at_its_last_event(
    log: AuditFile, oa: openai.OpenAI, model: str
) -> None:
    # The SDK stops reading at [DONE]; the provider ends the body a second later.
    fault = "oa" if model == "gpt-4o" else "an"
    chunks = list(
        oa.chat.completions.create(
            model=model,
            stream=True,
            messages=[{"role": "user", "content": "last event"}],
            extra_headers={f"x-fake-fault-{fault}": "end_delay=1", "x-request-id": f"end-{model}"},
        )
    )
    assert chunks
    r = log.last()
    assert r["request_id"] == f"end-{model}" and r["outcome"]["status"] == 200
    assert r["duration_ms"] < 900, "recorded at the last event, not at the body's end"


def test_translated_request(log: AuditFile, oa: openai.OpenAI) -> None:
    oa.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    r = log.last()
    assert r["client"]["api"] == "openai-chat" and r["model"]["route"] == "claude"
    assert r["answer"]["provider"] == "anthropic-a"
    assert r["answer"]["model_id"] == "claude-sonnet-4-5"
    assert r["attempts"][0]["model_id"] == "claude-sonnet-4-5"


def test_failed_over_request_has_two_attempts(log: AuditFile, oa: openai.OpenAI) -> None:
    oa.chat.completions.create(
        model="smart",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"x-fake-fault-an": "status=503"},
    )
    r = log.last()
    assert len(r["attempts"]) == 2, r
    first, second = r["attempts"]
    assert (first["provider"], first["status"]) == ("anthropic-a", 503)
    assert (second["provider"], second["status"]) == ("openai-a", 200)
    assert r["answer"]["provider"] == "openai-a" and r["outcome"]["status"] == 200


def test_anthropic_client(log: AuditFile, audited: tuple[GatewayProcess, AuditFile]) -> None:
    with anthropic.Anthropic(
        base_url=f"{audited[0].base}/anthropic", api_key="x", max_retries=0
    ) as client:
        client.messages.create(
            model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        # Streamed: the SDK stops at message_stop, before the body ends; that
        # event already waited for the record.
        with client.messages.stream(
            model="claude", max_tokens=10, messages=[{"role": "user", "content": "go"}]
        ) as stream:
            assert stream.get_final_message().content
            streamed = log.last()
        assert streamed["client"]["stream"] is True and streamed["outcome"]["status"] == 200
        assert streamed["usage"]["output_tokens"] > 0
    r = log.requests()[-2]
    assert r["client"] == {
        "api": "anthropic-messages",
        "path": "/anthropic/v1/messages",
        "stream": False,
    }
    assert r["answer"]["provider"] == "anthropic-a"


def test_refused_by_validation(log: AuditFile, audited: tuple[GatewayProcess, AuditFile]) -> None:
    resp = httpx.post(
        f"{audited[0].base}/v1/chat/completions", json={"model": "gpt-4o", "messages": "no"}
    )
    assert resp.status_code == 400
    r = log.last()
    assert r["outcome"]["status"] == 400 and r["outcome"]["by"] == "sidegate"
    assert r["outcome"]["error"] and r["attempts"] == [] and r["answer"] is None


def test_refused_by_quota(log: AuditFile, oa: openai.OpenAI) -> None:
    ask = {"model": "gpt-4o-b", "messages": [{"role": "user", "content": "hi"}]}
    oa.chat.completions.create(**ask, extra_headers={"x-sidegate-user": "quota-user"})
    assert log.last()["quota"]["counted_in"] == ["tiny"]
    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(**ask, extra_headers={"x-sidegate-user": "quota-user"})
    r = log.last()
    assert r["quota"] == {"counted_in": [], "refused_by": "tiny"}
    assert r["outcome"] == {"status": 429, "error": r["outcome"]["error"], "by": "sidegate"}
    assert r["caller"]["user"] == "quota-user" and r["attempts"] == []


def test_unknown_model(log: AuditFile, oa: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    r = log.last()
    assert r["model"] == {"requested": "nope", "route": None}
    assert r["outcome"]["status"] == 404 and r["outcome"]["error"] == "model_not_found"
    # The client picks the name, not the record's size.
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="m" * 50_000, messages=[{"role": "user", "content": "x"}])
    assert len(log.last()["model"]["requested"]) == 257


def test_content_only_where_the_route_opts_in(log: AuditFile, oa: openai.OpenAI) -> None:
    oa.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "remember this prompt"}]
    )
    r = log.last()
    content = r["content"]
    assert "remember this prompt" in content["request"] and not content["request_truncated"]
    assert "Hello from oa! You said: remember this prompt" in content["response"]
    assert content["response_bytes"] == len(content["response"].encode())
    # Streamed: the response is the SSE the client got, cut at max_bytes and marked so.
    list(
        oa.chat.completions.create(
            model="fast",
            stream=True,
            messages=[{"role": "user", "content": "word " * 2000}],
        )
    )
    content = log.last()["content"]
    assert content["request_truncated"] and len(content["request"].encode()) <= 4096
    assert content["response"].startswith("data: ")
    assert content["response_truncated"] and content["response_bytes"] > 4096
    for key in KEYS.values():
        assert key not in json.dumps(log.records())


def test_the_log_rotates_and_verifies(log: AuditFile, oa: openai.OpenAI) -> None:
    for _ in range(12):
        oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    files = log.files()
    assert len(files) >= 3, files
    report = verify(files)
    assert report.intact, [str(p) for p in report.problems]
    assert report.records == len(log.records())

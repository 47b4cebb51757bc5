"""Audit sinks at once: a file, stdout and OTLP logs (gRPC and HTTP) carry the same records.

The OTLP sink exports to the in-process OTLP receiver (``tests/otlp_receiver``)
with the SDK's real exporter; stdout is the process's file descriptor 1, read
with pytest's fd capture. Each sink's copy is a chain of its own that
``sidegate audit verify`` checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from extproc.audit.verify import verify
from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess
from tests.otlp_receiver import OtlpReceiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def _requests(gw: GatewayProcess, count: int) -> list[str]:
    ids = [f"sinks-{n}" for n in range(count)]
    with openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0) as c:
        for rid in ids:
            c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={
                    "x-request-id": rid,
                    "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
                },
            )
    return ids


def _chain_of(lines: list[str], tmp_path: Path, name: str) -> list[dict[str, Any]]:
    copy = tmp_path / name
    copy.write_text("".join(line + "\n" for line in lines))
    report = verify([copy])
    assert report.intact, [str(p) for p in report.problems]
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_file_stdout_and_otlp_at_once(
    fakes: dict[str, FakeProvider],
    otlp: OtlpReceiver,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    protocol: str,
) -> None:
    endpoint = otlp.grpc_endpoint if protocol == "grpc" else otlp.http_endpoint
    doc = gateway_doc(fakes)
    doc["audit"] = {
        "file": {"path": str(tmp_path / "audit.jsonl")},
        "stdout": True,
        "otlp": {"endpoint": endpoint, "protocol": protocol},
    }
    gw = GatewayProcess(doc).start()
    try:
        ids = _requests(gw, 3)
        logs = otlp.wait_logs(
            lambda r: r.attributes.get("sidegate.audit.kind") == "request", count=3
        )
    finally:
        gw.stop()  # closing flushes the exporter
    file_records = [
        json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()
    ]
    stdout_lines = [line for line in capfd.readouterr().out.splitlines() if line.startswith("{")]
    stdout_records = _chain_of(stdout_lines, tmp_path, "stdout.jsonl")
    otlp_lines = [
        r.body for r in sorted(otlp.logs(), key=lambda r: r.attributes["sidegate.audit.seq"])
    ]
    otlp_records = _chain_of(otlp_lines, tmp_path, "otlp.jsonl")
    for records in (file_records, stdout_records, otlp_records):
        assert [r["request_id"] for r in records if r["kind"] == "request"] == ids
        assert records[0]["kind"] == "start"
    # Each log record names its request and carries the request's trace.
    for log in logs:
        assert log.trace_id == TRACE_ID
        assert log.attributes["sidegate.request.id"] in ids
        assert json.loads(log.body)["request_id"] == log.attributes["sidegate.request.id"]


def test_a_collector_that_is_away_never_holds_a_request(
    fakes: dict[str, FakeProvider], otlp: OtlpReceiver, tmp_path: Path
) -> None:
    otlp.stall()  # every export hangs
    doc = gateway_doc(fakes)
    doc["audit"] = {
        "file": {"path": str(tmp_path / "audit.jsonl")},
        "otlp": {"endpoint": otlp.grpc_endpoint, "max_queue": 4},
        "durability": "sync",
    }
    gw = GatewayProcess(doc).start()
    try:
        import time

        start = time.monotonic()
        ids = _requests(gw, 10)
        assert time.monotonic() - start < 5, "requests waited for the collector"
        assert gw.gateway.audit.refusing is None
        records = (tmp_path / "audit.jsonl").read_text()
        assert all(rid in records for rid in ids)
    finally:
        otlp.resume()
        gw.stop()

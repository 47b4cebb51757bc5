"""An audit log that cannot be written: a full disk and a replaced file, under both policies.

The disk is a real tmpfs of 256 KiB mounted for the test (root only; CI runs as
root), filled with a file until the kernel says ENOSPC. The replaced file is
the active log moved away and a directory put at its path. Under ``refuse``
new requests get a 503 in the caller's format naming the sink; under
``serve`` they go on and the lost records are counted. Either way the episode
is logged once, and once space is back a ``lost`` record says what was missed.
"""

from __future__ import annotations

import errno
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader

from extproc.audit.verify import verify
from extproc.config import parse_config
from extproc.devtools.fake_provider import FakeProvider
from extproc.telemetry import start as start_telemetry
from tests.ci import skip_or_fail
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess, wait_until

TMPFS_SIZE = "256k"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as e:
        skip_or_fail(f"cannot mount a tmpfs for a full disk (needs root): {e}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=10)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


def _gateway(
    fakes: dict[str, FakeProvider], path: Path, policy: str, reader: MetricReader | None = None
) -> GatewayProcess:
    doc = gateway_doc(fakes)
    doc["audit"] = {"file": {"path": str(path)}, "durability": "sync", "on_failure": policy}
    if reader is None:
        return GatewayProcess(doc).start()
    tel = start_telemetry(parse_config(doc).telemetry, metric_readers=[reader], env={})
    return GatewayProcess(doc, telemetry=tel).start()


def _lost_metric(reader: InMemoryMetricReader) -> dict[str, int]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        str(p.attributes["sink"]): int(p.value)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "sidegate.audit.records.lost"
        for p in m.data.data_points
    }


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def _ask(client: openai.OpenAI) -> str | None:
    return (
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        .choices[0]
        .message.content
    )


def _episode_logs(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_a_full_disk_refuses_requests_until_space_is_back(
    fakes: dict[str, FakeProvider], disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="extproc.audit")
    path = disk / "audit.jsonl"
    gw = _gateway(fakes, path, "refuse")
    try:
        oa = openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0)
        an = anthropic.Anthropic(base_url=f"{gw.base}/anthropic", api_key="x", max_retries=0)
        assert _ask(oa)
        filler = _fill(disk)
        # Records still fit in the log's last page for a while; the request
        # whose record hits the full disk still completes, then the gateway
        # refuses, naming the sink and why, in each caller's format.
        with pytest.raises(openai.APIStatusError) as refused:
            for _ in range(20):
                assert _ask(oa)
        assert refused.value.status_code == 503
        message = refused.value.body["message"]  # type: ignore[index]
        assert str(path) in message and "No space left on device" in message
        assert refused.value.response.headers["retry-after"]
        with pytest.raises(anthropic.APIStatusError) as a_refused:
            an.messages.create(
                model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert a_refused.value.status_code == 503
        assert a_refused.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
        assert "No space left on device" in a_refused.value.body["error"]["message"]  # type: ignore[index]
        assert len(_episode_logs(caplog, "records are being lost")) == 1, "logged once"
        lost_now = gw.gateway.audit.writer.lost[f"file {path}"]  # type: ignore[union-attr]
        assert lost_now >= 3  # the last completed request's and both refusals'

        filler.unlink()
        wait_until(lambda: gw.gateway.audit.refusing is None, "the sink to work again", 10)
        assert _ask(oa)
        assert len(_episode_logs(caplog, "can be written again")) == 1
        records = _records(path)
        [lost] = [r for r in records if r["kind"] == "lost"]
        assert lost["count"] == lost_now and "No space left on device" in lost["reason"]
        assert records[-1]["kind"] == "request" and records[-1]["outcome"]["status"] == 200
        report = verify([path])
        assert report.intact, [str(p) for p in report.problems]
        assert any(f"{lost_now} records lost" in n for n in report.notes)
        oa.close()
        an.close()
    finally:
        gw.stop()


def test_a_full_disk_under_serve_counts_the_lost_records(
    fakes: dict[str, FakeProvider], disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="extproc.audit")
    path = disk / "audit.jsonl"
    reader = InMemoryMetricReader()
    gw = _gateway(fakes, path, "serve", reader)
    try:
        oa = openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0)
        assert _ask(oa)
        filler = _fill(disk)
        writer = gw.gateway.audit.writer
        assert writer is not None
        for _ in range(30):  # records fit in the log's last page for a while
            assert _ask(oa), "serve: requests go on while the disk is full"
            if writer.lost[f"file {path}"] >= 5:
                break
        lost_now = writer.lost[f"file {path}"]
        assert lost_now == 5
        # Also a metric, by sink.
        assert _lost_metric(reader)[f"file {path}"] == 5
        assert len(_episode_logs(caplog, "records are being lost and requests go on")) == 1
        filler.unlink()
        assert _ask(oa)
        records = _records(path)
        [lost] = [r for r in records if r["kind"] == "lost"]
        assert lost["count"] == lost_now
        assert verify([path]).intact
        oa.close()
    finally:
        gw.stop()


def test_a_replaced_file_refuses_and_recovers(
    fakes: dict[str, FakeProvider], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="extproc.audit")
    path = tmp_path / "audit.jsonl"
    gw = _gateway(fakes, path, "refuse")
    try:
        oa = openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0)
        assert _ask(oa)
        path.rename(tmp_path / "moved.jsonl")
        path.mkdir()  # the log's path is now a directory: it cannot be opened for writing
        assert _ask(oa)
        with pytest.raises(openai.APIStatusError) as refused:
            _ask(oa)
        assert refused.value.status_code == 503
        assert "Is a directory" in refused.value.body["message"]  # type: ignore[index]
        path.rmdir()
        wait_until(lambda: gw.gateway.audit.refusing is None, "the sink to work again", 10)
        assert _ask(oa)
        # The chain went on in the new file: with the moved one it verifies whole.
        report = verify([tmp_path / "moved.jsonl", path])
        assert report.intact, [str(p) for p in report.problems]
        oa.close()
    finally:
        gw.stop()

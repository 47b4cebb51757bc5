"""The audit config: parsed with errors naming the field, applied on reload, batched writes.

The ``AuditLog`` tests drive the real writer thread and file sink; the batch
mode test goes through a real gateway.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from extproc.audit.audit_log import AuditLog
from extproc.audit.config import AuditConfig, Durability, OnFailure, OtlpProtocol
from extproc.config import ConfigError, parse_config
from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess, wait_until
from tests.test_config import BASE


def _audit(section: Any) -> AuditConfig:
    return parse_config({**BASE, "audit": section}).audit


def test_defaults_and_every_field() -> None:
    assert not parse_config(BASE).audit.enabled
    cfg = _audit(
        {
            "file": {"path": "/var/log/a.jsonl", "max_bytes": 4096, "max_files": 3},
            "stdout": True,
            "otlp": {"endpoint": "http://c:4318", "protocol": "http/protobuf", "max_queue": 5},
            "durability": "batch",
            "flush_interval": "50ms",
            "queue_size": 7,
            "on_failure": "serve",
            "content": {"routes": ["smart"], "max_bytes": 10},
        }
    )
    assert cfg.file is not None and (cfg.file.max_bytes, cfg.file.max_files) == (4096, 3)
    assert cfg.stdout and cfg.otlp is not None and cfg.otlp.protocol is OtlpProtocol.HTTP
    assert (cfg.durability, cfg.flush_interval, cfg.queue_size) == (Durability.BATCH, 0.05, 7)
    assert cfg.on_failure is OnFailure.SERVE
    assert cfg.records_content("smart") and not cfg.records_content("gpt-4o")
    assert _audit({"otlp": True, "content": {"routes": ["*"]}}).records_content("gpt-4o")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({}, "audit: an audit section needs at least one sink"),
        ({"stdout": True, "sink": 1}, "audit.sink: unknown field"),
        ({"stdout": True, "durability": "fast"}, "audit.durability: expected one of: sync, batch"),
        ({"stdout": True, "on_failure": "ignore"}, "audit.on_failure: expected one of"),
        ({"file": {"path": "a", "max_bytes": 100}}, "audit.file.max_bytes: expected an integer"),
        ({"file": {}}, "audit.file.path: expected a non-empty string"),
        ({"stdout": True, "flush_interval": "0s"}, "audit.flush_interval: expected a positive"),
        ({"otlp": {"protocol": "udp"}}, "audit.otlp.protocol: expected one of: grpc"),
        ({"stdout": True, "content": {"routes": ["nope"]}}, "audit.content.routes[0]: no route"),
        ({"stdout": True, "chain_key": {"env": "1x"}}, "audit.chain_key.env: not an environment"),
    ],
)
def test_errors_name_the_field(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        _audit(section)
    assert str(e.value).startswith(message), str(e.value)


def test_a_chain_key_that_cannot_be_read_refuses_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from extproc.gateway import Gateway

    doc = {**BASE, "audit": {"stdout": True, "chain_key": {"env": "SG_TEST_NO_SUCH_KEY"}}}
    monkeypatch.delenv("SG_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"audit\.chain_key\.env: environment variable"):
        Gateway(parse_config(doc))
    monkeypatch.setenv("SG_TEST_NO_SUCH_KEY", "short")
    with pytest.raises(ConfigError, match=r"audit\.chain_key: the key must be at least 16"):
        Gateway(parse_config(doc))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_reload_moves_the_log_and_applies_the_rest_live(tmp_path: Path) -> None:
    async def main() -> None:
        log = AuditLog()
        first = _audit({"file": {"path": str(tmp_path / "a.jsonl")}})
        log.configure(first)
        await log.start()
        assert await log.submit({"kind": "request", "request_id": "1"})  # type: ignore[misc]
        writer = log.writer
        # Only the content opt-in changes: the same writer goes on.
        log.configure(
            _audit({"file": {"path": str(tmp_path / "a.jsonl")}, "content": {"routes": ["smart"]}})
        )
        assert log.writer is writer and log.content_limit("smart") > 0
        # A new file: the old writer closes (its file released), the new one starts.
        log.configure(_audit({"file": {"path": str(tmp_path / "b.jsonl")}}))
        assert log.writer is not writer
        assert await log.submit({"kind": "request", "request_id": "2"})  # type: ignore[misc]
        await log.close()

    asyncio.run(main())
    a, b = _lines(tmp_path / "a.jsonl"), _lines(tmp_path / "b.jsonl")
    assert [r.get("request_id") for r in a] == [None, "1"]
    assert [r.get("request_id") for r in b] == [None, "2"]
    assert b[0]["kind"] == "start" and b[0]["seq"] == 0


def test_batch_mode_writes_every_interval_and_nothing_waits(
    fakes: dict[str, FakeProvider], tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    doc = gateway_doc(fakes)
    doc["audit"] = {"file": {"path": str(path)}, "durability": "batch", "flush_interval": "3s"}
    gw = GatewayProcess(doc).start()
    try:
        with openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0) as c:
            wait_until(lambda: _lines(path), "the start record")
            start = time.monotonic()
            for n in range(3):
                c.chat.completions.create(
                    model="gpt-4o",
                    messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"x-request-id": f"batch-{n}"},
                )
            assert time.monotonic() - start < 2.5, "a response waited for the batched audit log"
            # Not with the responses: at the next interval (a flush landing
            # between the last response and this read would have to hit a
            # window of a millisecond in three seconds).
            assert sum(r["kind"] == "request" for r in _lines(path)) < 3
            wait_until(
                lambda: sum(r["kind"] == "request" for r in _lines(path)) == 3,
                "the batch to be written",
                5,
            )
    finally:
        gw.stop()

"""No provider key in any log, span or audit record the suite produces.

Runs last (``conftest`` orders it): it scans everything the suite registered
(``secret_scan``): every Python log record, each test gateway's Envoy log,
the spans and log records OTLP receivers got, the audit files under pytest's
temporary directory. So that the scan is never empty, and covers sidegate's
own logs at debug level, it first drives a ``sidegate run -v`` of its own
with every output on (audit file, stdout and OTLP, content recorded on every
route, traces to an OTLP receiver), through requests that tempt a leak: a
provider that echoes its key back, failover, refusals. It fails unless it
scanned log lines, spans and audit records, and the scanner itself is shown
to find a key planted in each kind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import KEYS, gateway_doc
from tests.harness import free_port, wait_until
from tests.otlp_receiver import OtlpReceiver
from tests.secret_scan import KINDS, PRODUCED, audit_lines, scan


def _keys() -> dict[str, str]:
    keys = dict(KEYS)
    for n, value in enumerate(sorted(PRODUCED.keys - set(KEYS.values()))):
        keys[f"a test gateway's key #{n}"] = value
    for name, value in os.environ.items():
        if name.startswith("SG_") and "KEY" in name and len(value) >= 8:
            keys.setdefault(name, value)
    return keys


def test_the_scan_finds_a_planted_key(tmp_path: Path) -> None:
    planted = KEYS["SG_TEST_AN_KEY"]
    # Not named *.jsonl: the suite-wide scan must not find this plant.
    audit = tmp_path / "planted-record.txt"
    audit.write_text(
        json.dumps({"kind": "request", "hash": "h", "prev": "p", "seq": 0, "x": planted}) + "\n"
    )
    result = scan(
        [
            ("log", "a log line", f"INFO extproc: using {planted}", 1),
            ("span", "a span", f"attributes {{'gen_ai.prompt': '{planted}'}}", 1),
            ("log", "a clean line", "INFO extproc: nothing here", 1),
        ],
        [("audit", str(audit), audit)],
        {"SG_TEST_AN_KEY": planted},
    )
    assert sorted((f.kind, f.source) for f in result.findings) == [
        ("audit", str(audit)),
        ("log", "a log line"),
        ("span", "a span"),
    ]
    assert result.counts == {"log": 2, "span": 1, "audit": 1}


def _run(tmp_path: Path, fakes: dict[str, FakeProvider], otlp: OtlpReceiver) -> tuple[str, Path]:
    doc: dict[str, Any] = gateway_doc(fakes)
    doc["listen"] = {"port": free_port()}
    doc["envoy"] = {"concurrency": 1, "log_level": "info"}
    audit = tmp_path / "audit.jsonl"
    doc["audit"] = {
        "file": {"path": str(audit)},
        "stdout": True,
        "otlp": {"endpoint": otlp.grpc_endpoint},
        "content": {"routes": ["*"]},
        # A secret of sidegate's own, scanned for like the provider keys.
        "chain_key": {"env": "SG_TEST_AUDIT_CHAIN_KEY"},
    }
    # Traces and metrics too, prompts and answers in spans included.
    doc["telemetry"] = {
        "export": {"endpoint": otlp.grpc_endpoint, "protocol": "grpc"},
        "traces": {"schedule_delay": "100ms"},
        "metrics": {"export_interval": "500ms"},
        "content": {"routes": ["*"]},
    }
    cfg = tmp_path / "sidegate.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    ready = tmp_path / "ready"
    out = tmp_path / "run.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "extproc.cli",
                "-v",
                "run",
                "-c",
                str(cfg),
                "--ready-file",
                str(ready),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wait_until(
            lambda: ready.exists() and ready.read_text().endswith("\n"),
            "sidegate run to be ready",
            30,
        )
        _tempt(f"http://127.0.0.1:{doc['listen']['port']}")
        otlp.wait_spans(lambda s: True, count=1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return out.read_text(errors="replace"), audit


def _tempt(base: str) -> None:
    """Requests that would leak a key if anything were careless with one."""
    echo = {"x-fake-fault-oa": "echo_key=1", "x-fake-fault-an": "echo_key=1"}
    with openai.OpenAI(base_url=f"{base}/v1", api_key="app-key", max_retries=0) as oa:
        for model in ("gpt-4o", "smart"):
            oa.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], extra_headers=echo
            )
            list(
                oa.chat.completions.create(
                    model=model,
                    stream=True,
                    messages=[{"role": "user", "content": "stream"}],
                    extra_headers=echo,
                )
            )
        oa.chat.completions.create(
            model="smart",
            messages=[{"role": "user", "content": "fail over"}],
            extra_headers={"x-fake-fault-an": "status=503", **echo},
        )
        with pytest.raises(openai.NotFoundError):
            oa.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with anthropic.Anthropic(base_url=f"{base}/anthropic", api_key="app-key", max_retries=0) as an:
        an.messages.create(
            model="claude",
            max_tokens=10,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers=echo,
        )
    assert httpx.post(f"{base}/v1/chat/completions", json={"model": "gpt-4o"}).status_code == 400


def test_no_key_in_any_log_span_or_audit_record(
    fakes: dict[str, FakeProvider],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SG_TEST_AUDIT_CHAIN_KEY", "audit-chain-key-of-the-scan-0123456789")
    with OtlpReceiver() as otlp:  # it registers every span and log record it gets
        output, audit = _run(tmp_path, fakes, otlp)
        assert otlp.spans() and otlp.logs()
    stdout_audit = audit_lines(output)
    PRODUCED.text("log", "sidegate run -v", output, output.count("\n") - len(stdout_audit))
    PRODUCED.text("audit", "sidegate run stdout", "\n".join(stdout_audit), len(stdout_audit))
    for path in sorted(tmp_path_factory.getbasetemp().rglob("*.jsonl*")):
        PRODUCED.file("audit", str(path), path)

    result = scan(PRODUCED.texts, PRODUCED.files, _keys())
    for kind in KINDS:
        assert result.counts[kind] > 0, f"no {kind} was scanned: the scan proves nothing"
    assert not result.findings, "\n".join(map(str, result.findings))
    # The echoing provider did hand its key back: the records hold it masked.
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    echoed = [r for r in records if "key=***" in json.dumps(r.get("content", {}))]
    assert echoed, "no record shows the echoed key, scrubbed"
    print(
        "scanned: "
        + ", ".join(f"{result.counts[k]} {k} records" for k in KINDS)
        + f" for {len(_keys())} keys; echoed-key records {len(echoed)}"
    )

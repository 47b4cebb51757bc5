"""``sidegate run`` as a user runs it: one command, ready, serving, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import yaml

from extproc.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.harness import free_port


def _start(tmp_path: Path, doc: dict[str, Any]) -> tuple[subprocess.Popen[str], str]:
    cfg = tmp_path / "sidegate.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "extproc.cli",
            "run",
            "-c",
            str(cfg),
            "--port",
            str(free_port()),
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
    )
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "sidegate run did not become ready"
        time.sleep(0.05)
    return proc, ready.read_text().split()[0]


def test_run_serves_and_stops_cleanly(tmp_path: Path, fakes: dict[str, FakeProvider]) -> None:
    proc, base = _start(tmp_path, gateway_doc(fakes))
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello from an! You said: hi"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "sidegate ready on" in out


def _ppid(p: Path) -> int:
    try:
        return int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_run_exits_nonzero_when_envoy_dies(tmp_path: Path, fakes: dict[str, FakeProvider]) -> None:
    proc, _ = _start(tmp_path, gateway_doc(fakes))
    children = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _ppid(p) == proc.pid and "envoy" in _cmdline(p)
    ]
    assert children, "no Envoy child found"
    os.kill(children[0], signal.SIGKILL)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "Envoy exited unexpectedly" in out


def test_config_check_reports_the_bad_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "providers:\n  p: {api: openai, base_url: 'nope', keys: [{env: X}]}\nmodels: {}\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "config", "check", "-c", str(cfg)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "providers.p.base_url: expected an http:// or https:// URL" in r.stderr


def test_run_refuses_a_bootstrap_envoy_rejects(
    tmp_path: Path, fakes: dict[str, FakeProvider]
) -> None:
    doc = gateway_doc(fakes)
    doc["providers"]["openai-a"]["ca_file"] = "/nonexistent/ca.pem"
    doc["providers"]["openai-a"]["base_url"] = "https://127.0.0.1:1/v1"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "run", "-c", str(cfg), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "Envoy rejected the generated bootstrap" in r.stderr

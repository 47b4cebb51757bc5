"""``sidegate run`` as a user runs it: one command, ready, serving, clean shutdown."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import yaml

from extproc import __version__
from extproc.cli import build_parser
from extproc.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.harness import free_port, wait_until


class Running:
    """``sidegate run`` as a child; its output is collected as it comes, so a test can wait on it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 15.0) -> None:
        wait_until(lambda: text in self.output, f"{text!r} in the output of sidegate run", timeout)

    def stop(self, timeout: float = 20.0) -> str:
        """SIGTERM, wait for the exit, and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        self._reader.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.output


def _start(tmp_path: Path, doc: dict[str, Any]) -> tuple[Running, str]:
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
    running = Running(proc)

    def is_ready() -> bool:
        assert proc.poll() is None, f"sidegate run exited:\n{running.output}"
        return ready.exists() and ready.read_text().endswith("\n")

    wait_until(is_ready, "sidegate run to write its --ready-file", 30)
    return running, ready.read_text().split()[0]


def test_run_serves_and_stops_cleanly(tmp_path: Path, fakes: dict[str, FakeProvider]) -> None:
    run, base = _start(tmp_path, gateway_doc(fakes))
    try:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello from an! You said: hi"
    finally:
        out = run.stop()
    assert run.proc.returncode == 0, out
    assert "sidegate ready on" in out
    # Nothing a user cannot act on: gRPC's fork handlers, Envoy's connection-limit notice.
    assert "fork" not in out and "global_downstream_max_connections" not in out, out


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
    run, _ = _start(tmp_path, gateway_doc(fakes))
    children = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _ppid(p) == run.proc.pid and "envoy" in _cmdline(p)
    ]
    assert children, "no Envoy child found"
    os.kill(children[0], signal.SIGKILL)
    run.proc.wait(20)
    out = run.stop()
    assert run.proc.returncode == 1
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


def _parsers(parser: argparse.ArgumentParser, name: str = "sidegate") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help_and_shows_its_default() -> None:
    parsers = list(_parsers(build_parser()))
    assert len(parsers) >= 12  # the walk reached the nested commands
    for name, parser in parsers:
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{name} {action.option_strings[0]} has no help text"
            default = action.default
            if default not in (None, False, True, argparse.SUPPRESS) and not isinstance(
                default, list
            ):
                # argparse wraps long lines: compare without the line breaks.
                assert f"(default: {default})" in " ".join(text.split()), (name, action.dest)
    top = build_parser().format_help()
    assert "``" not in top and ":class:" not in top  # plain text, no reStructuredText


def test_version() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "--version"], capture_output=True, text=True
    )
    assert r.returncode == 0 and r.stdout.strip() == f"sidegate {__version__}"


def test_config_check_strict_fails_without_saying_ok(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "providers:\n  p: {api: openai, base_url: 'https://x.example/v1', "
        "keys: [{env: SG_TEST_UNSET_KEY}]}\nmodels: {m: {provider: p}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SG_TEST_UNSET_KEY"}
    check = [sys.executable, "-m", "extproc.cli", "config", "check", "-c", str(cfg)]
    lenient = subprocess.run(check, capture_output=True, text=True, env=env)
    assert lenient.returncode == 0 and ": OK" in lenient.stdout
    assert "SG_TEST_UNSET_KEY is not set" in lenient.stderr
    strict = subprocess.run([*check, "--strict"], capture_output=True, text=True, env=env)
    assert strict.returncode == 1
    assert "OK" not in strict.stdout and "FAILED (--strict)" in strict.stdout


def test_run_refuses_a_port_in_use(tmp_path: Path, fakes: dict[str, FakeProvider]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(gateway_doc(fakes)))
        r = subprocess.run(
            [sys.executable, "-m", "extproc.cli", "run", "-c", str(cfg), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr


def test_probe_over_plain_http_checks_every_key(fakes: dict[str, FakeProvider]) -> None:
    from extproc.config import parse_config
    from extproc.provider_check import check_providers

    doc = gateway_doc(fakes)
    doc["providers"]["openai-b"]["keys"] = [{"env": "SG_TEST_OA_KEY"}]  # openai-a's key
    reports = {r.provider: r for r in check_providers(parse_config(doc), timeout=5)}
    assert set(reports) == set(doc["providers"])
    for name in ("openai-a", "anthropic-a", "anthropic-b"):
        assert reports[name].ok, reports[name].lines()
        [verdict] = reports[name].keys
        assert verdict.startswith("keys[0] (env SG_TEST_") and verdict.endswith(": accepted")
    wrong = reports["openai-b"]
    assert not wrong.ok
    assert wrong.keys == ["keys[0] (env SG_TEST_OA_KEY): REJECTED (GET /v1/models answered 401)"]
    # What the fake was asked: its models, with the key, nothing else.
    got = fakes["ob"].requests[-1]
    assert (got.method, got.path) == ("GET", "/v1/models")
    assert fakes["an"].requests[-1].headers["anthropic-version"] == "2023-06-01"

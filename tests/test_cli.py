"""``sidegate run`` as a user runs it: one command, ready, serving, clean shutdown."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from extproc import __version__
from extproc.cli import build_parser
from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.harness import free_port, wait_until
from tests.sidegate_run import CollectedOutput


def _start(
    tmp_path: Path, doc: dict[str, Any], port: int | None = None, name: str = "sidegate"
) -> tuple[subprocess.Popen[str], str]:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    ready = tmp_path / f"{name}.ready"
    proc = _spawn(tmp_path, cfg, port or free_port(), "--ready-file", str(ready))

    def is_ready() -> bool:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        return ready.exists() and ready.read_text().endswith("\n")

    wait_until(is_ready, "sidegate run to write its --ready-file", 30)
    return proc, ready.read_text().split()[0]


class Running(CollectedOutput):
    """``sidegate run`` as a child; its output is collected as it comes, so a test can wait on it."""

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


def _start_running(tmp_path: Path, doc: dict[str, Any]) -> tuple[Running, str]:
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


_SPAWNED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_gateway_left_behind() -> Iterator[None]:
    """A test that fails half-way must not leave its gateway (and Envoy) running."""
    yield
    while _SPAWNED:
        proc = _SPAWNED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=20)
        elif proc.stdout is not None:
            proc.stdout.close()


def _spawn(tmp_path: Path, cfg: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    # TMPDIR: the run dir is made here, where the tests can see what is left.
    proc = subprocess.Popen(
        [sys.executable, "-m", "extproc.cli", "run", "-c", str(cfg), "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    _SPAWNED.append(proc)
    return proc


def _run_dirs(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("sidegate-*"))


def test_run_serves_and_stops_cleanly(tmp_path: Path, fakes: dict[str, FakeProvider]) -> None:
    run, base = _start_running(tmp_path, gateway_doc(fakes))
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
    assert _run_dirs(tmp_path) == []
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
    proc, _ = _start(tmp_path, gateway_doc(fakes))
    children = _envoy_children(proc.pid)
    assert children, "no Envoy child found"
    os.kill(children[0], signal.SIGKILL)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "Envoy exited unexpectedly (killed by SIGKILL)" in out
    assert _run_dirs(tmp_path) == []


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
    proc = _spawn(tmp_path, cfg, free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1 and "Envoy rejected the generated bootstrap" in out
    assert _run_dirs(tmp_path) == []


def _envoy_children(pid: int) -> list[int]:
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and _ppid(p) == pid and "envoy" in _cmdline(p)
    ]


def test_sigint_stops_cleanly(tmp_path: Path, fakes: dict[str, FakeProvider]) -> None:
    proc, _ = _start(tmp_path, gateway_doc(fakes))
    envoy = _envoy_children(proc.pid)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "stopped (SIGINT)" in out
    assert _run_dirs(tmp_path) == []
    assert envoy and not Path(f"/proc/{envoy[0]}").exists()


def test_a_run_killed_outright_takes_envoy_along_and_the_next_run_cleans_up(
    tmp_path: Path, fakes: dict[str, FakeProvider]
) -> None:
    proc, _ = _start(tmp_path, gateway_doc(fakes), name="first")
    envoy = _envoy_children(proc.pid)
    (left,) = _run_dirs(tmp_path)
    proc.kill()
    proc.communicate(timeout=20)
    wait_until(
        lambda: not _cmdline(Path(f"/proc/{envoy[0]}")), "Envoy to exit with its runner", 10
    )
    assert left.exists()  # nothing can run on SIGKILL
    second, _ = _start(tmp_path, gateway_doc(fakes), name="second")
    try:
        assert not left.exists(), "the next run did not remove the stale run dir"
        assert len(_run_dirs(tmp_path)) == 1
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=20)


def test_run_refuses_a_port_another_program_holds(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(_one_provider()))
        proc = _spawn(tmp_path, cfg, port)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert f"cannot listen on 127.0.0.1:{port}" in out
    assert "sidegate ready" not in out
    assert _run_dirs(tmp_path) == []


def test_run_refuses_a_port_another_sidegate_serves(
    tmp_path: Path, fakes: dict[str, FakeProvider]
) -> None:
    port = free_port()
    first, base = _start(tmp_path, gateway_doc(fakes), port=port, name="first")
    try:
        cfg = tmp_path / "second.yaml"
        cfg.write_text(yaml.safe_dump(gateway_doc(fakes)))
        second = _spawn(tmp_path, cfg, port)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 1, out
        assert f"cannot listen on 127.0.0.1:{port}" in out and "another sidegate" in out
        # The first one still has the port to itself.
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello from oa! You said: hi"
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)


def _one_provider() -> dict[str, Any]:
    return {
        "providers": {
            "p": {"api": "openai", "base_url": "http://127.0.0.1:9/v1", "keys": [{"env": "SG_X"}]}
        },
        "models": {"m": {"provider": "p"}},
    }


def test_run_is_not_ready_when_envoy_cannot_bind(tmp_path: Path) -> None:
    """The port taken between the check and Envoy's start: Envoy's refusal is reported."""
    with socket.socket() as held:
        # SO_REUSEPORT would let an Envoy that asked for it share the port.
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump(_one_provider()))
        code = (
            "import sys, extproc.runner as r; r.check_port_free = lambda listen: None; "
            "from extproc.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, "run", "-c", str(cfg), "--port", str(port)],
            capture_output=True, text=True, timeout=60, env={**os.environ, "TMPDIR": str(tmp_path)},
        )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert f"Envoy could not listen on 127.0.0.1:{port}" in r.stderr
    assert "sidegate ready" not in r.stderr
    assert _run_dirs(tmp_path) == []


def test_scripts_run_refuses_when_a_fake_provider_cannot_listen(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    held = socket.socket()
    try:
        held.bind(("127.0.0.1", 18081))
        held.listen()
    except OSError as e:
        held.close()
        raise AssertionError(f"cannot hold 127.0.0.1:18081 for this test: {e}") from None
    # Its own session: on a time-out the whole script, fakes and gateway, is ended.
    script = subprocess.Popen(
        [str(root / "scripts" / "run")],
        env={**os.environ, "SIDEGATE_NO_INSTALL": "1", "TMPDIR": str(tmp_path)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = script.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(script.pid, signal.SIGKILL)
        script.communicate()
        raise AssertionError("scripts/run did not refuse within 60 s") from None
    finally:
        held.close()
    r = subprocess.CompletedProcess(script.args, script.returncode, out, err)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the fake openai provider cannot listen on 127.0.0.1:18081" in r.stderr
    assert "sidegate ready" not in r.stderr
    assert list(tmp_path.iterdir()) == []  # its temp dir removed, no run dir made


def test_config_refuses_log_levels_that_print_keys_and_an_admin_port(tmp_path: Path) -> None:
    for extra, expected in (
        ({"envoy": {"log_level": "debug"}}, "envoy.log_level: debug prints request headers"),
        ({"envoy": {"log_level": "trace"}}, "envoy.log_level: trace prints request headers"),
        ({"listen": {"admin_port": 15000}}, "listen.admin_port: removed"),
    ):
        cfg = tmp_path / "c.yaml"
        cfg.write_text(yaml.safe_dump({**_one_provider(), **extra}))
        r = subprocess.run(
            [sys.executable, "-m", "extproc.cli", "config", "check", "-c", str(cfg)],
            capture_output=True, text=True, env={**os.environ, "SG_X": "k"},
        )  # fmt: skip
        assert r.returncode == 2 and expected in r.stderr, r.stderr
    cfg.write_text(yaml.safe_dump({**_one_provider(), "envoy": {"log_level": "info"}}))
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "config", "check", "-c", str(cfg)],
        capture_output=True, text=True, env={**os.environ, "SG_X": "k"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


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

"""``sidegate run`` as a user runs it: one command, ready, serving, clean shutdown."""

from __future__ import annotations

import os
import signal
import socket
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


def _start(
    tmp_path: Path, doc: dict[str, Any], port: int | None = None, name: str = "sidegate"
) -> tuple[subprocess.Popen[str], str]:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    ready = tmp_path / f"{name}.ready"
    proc = _spawn(tmp_path, cfg, port or free_port(), "--ready-file", str(ready))
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "sidegate run did not become ready"
        time.sleep(0.05)
    return proc, ready.read_text().split()[0]


def _spawn(tmp_path: Path, cfg: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    # TMPDIR: the run dir is made here, where the tests can see what is left.
    return subprocess.Popen(
        [sys.executable, "-m", "extproc.cli", "run", "-c", str(cfg), "--port", str(port), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )


def _run_dirs(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("sidegate-*"))


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
    assert _run_dirs(tmp_path) == []


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
    deadline = time.monotonic() + 10
    while Path(f"/proc/{envoy[0]}/cmdline").exists() and _cmdline(Path(f"/proc/{envoy[0]}")):
        assert time.monotonic() < deadline, "Envoy outlived its runner"
        time.sleep(0.05)
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
    except OSError:
        pass  # someone else holds it: the script must refuse all the same
    try:
        r = subprocess.run(
            [str(root / "scripts" / "run")],
            env={**os.environ, "SIDEGATE_NO_INSTALL": "1", "TMPDIR": str(tmp_path)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        held.close()
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

"""Config changes reach a running gateway without a restart; bad ones are refused.

Also the sidecar's two-container shape: ``sidegate extproc --envoy-dir`` writes
Envoy's files, ``sidegate health`` gates on them, and a separate Envoy started
from those files serves, with a readiness port that exposes nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from extproc.config_watch import ConfigWatcher
from extproc.devtools.fake_provider import FakeProvider
from extproc.runner import find_envoy
from tests.conftest import gateway_doc
from tests.harness import free_port, wait_until
from tests.test_cli import _start_running


def _eventually(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    wait_until(check, what, timeout, every=0.1)


def _write_atomically(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    os.replace(tmp, path)


def _model_ids(client: openai.OpenAI) -> set[str]:
    return {m.id for m in client.models.list()}


def test_run_picks_up_a_new_config_and_refuses_a_bad_one(
    tmp_path: Path, fakes: dict[str, FakeProvider]
) -> None:
    doc = gateway_doc(fakes)
    run, base = _start_running(tmp_path, doc)
    cfg = tmp_path / "sidegate.yaml"
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
    try:
        assert "cheap" not in _model_ids(client)
        # A new route and a new provider (a new Envoy route and cluster).
        doc["providers"]["openai-c"] = dict(doc["providers"]["openai-b"])
        doc["models"]["gpt-4o-c"] = {"provider": "openai-c", "id": "gpt-4o-mini"}
        doc["routes"]["cheap"] = [["gpt-4o-c"]]
        _write_atomically(cfg, doc)
        _eventually(lambda: "cheap" in _model_ids(client), "the new route in /v1/models")
        run.wait_for("reloaded (version")
        reply = client.chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.model == "gpt-4o-mini"

        _write_atomically(cfg, "providers: {p: {api: nope}}\n")
        # Proof the bad config was read and refused, before asserting that nothing changed.
        run.wait_for("providers.p.api")
        assert "config refused, the last good config keeps serving" in run.output
        reply = client.chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": "still"}]
        )
        assert reply.choices[0].message.content == "Hello from ob! You said: still"
    finally:
        run.stop()


def _configmap_swap(mount: Path, name: str, text: str, version: int) -> None:
    """What the kubelet does to a ConfigMap volume: a new dir, then an atomic ``..data`` swap."""
    target = mount / f"..2026_11_24_{version:02d}"
    target.mkdir()
    (target / name).write_text(text)
    tmp_link = mount / "..data_tmp"
    tmp_link.symlink_to(target.name)
    os.replace(tmp_link, mount / "..data")
    if not (mount / name).is_symlink():
        (mount / name).symlink_to(f"..data/{name}")


def test_watcher_follows_a_configmap_swap(tmp_path: Path, fakes: dict[str, FakeProvider]) -> None:
    doc = gateway_doc(fakes)
    first = yaml.safe_dump(doc)
    _configmap_swap(tmp_path, "sidegate.yaml", first, 1)
    watcher = ConfigWatcher(tmp_path / "sidegate.yaml", current=first.encode())
    assert watcher.check() is None

    _configmap_swap(tmp_path, "sidegate.yaml", first, 2)  # same bytes: no change
    assert watcher.check() is None

    doc["routes"]["cheap"] = [["gpt-4o-b"]]
    _configmap_swap(tmp_path, "sidegate.yaml", yaml.safe_dump(doc), 3)
    found = watcher.check()
    assert found is not None and "cheap" in found[0].routes
    watcher.commit(found[1])

    _configmap_swap(tmp_path, "sidegate.yaml", "routes: [\n", 4)
    assert watcher.check() is None
    assert watcher.last_error and "not valid YAML at line 2" in watcher.last_error


def test_a_config_envoy_rejects_never_reaches_the_extproc(
    tmp_path: Path, fakes: dict[str, FakeProvider]
) -> None:
    doc = gateway_doc(fakes)
    run, base = _start_running(tmp_path, doc)
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
    try:
        # Valid for sidegate, refused by Envoy when it loads the cluster.
        doc["providers"]["openai-c"] = dict(doc["providers"]["openai-b"])
        doc["providers"]["openai-c"]["base_url"] = "https://127.0.0.1:1/v1"
        doc["providers"]["openai-c"]["ca_file"] = "/nonexistent/ca.pem"
        doc["models"]["gpt-4o-c"] = {"provider": "openai-c", "id": "gpt-4o-mini"}
        doc["routes"]["cheap"] = [["gpt-4o-c"]]
        _write_atomically(tmp_path / "sidegate.yaml", doc)
        # Proof Envoy was given the new version and refused it, before asserting that
        # nothing changed: without it the assertions pass on a reload not yet run.
        run.wait_for("Envoy rejected the generated clusters")
        assert "config refused, the last good config keeps serving" in run.output
        assert "cheap" not in _model_ids(client)
        reply = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "ok"}]
        )
        assert reply.choices[0].message.content == "Hello from oa! You said: ok"
    finally:
        run.stop()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


@pytest.fixture
def sidecar(tmp_path: Path, fakes: dict[str, FakeProvider]) -> Any:
    """The two sidecar containers as processes: ext_proc first, then Envoy from its files."""
    doc = gateway_doc(fakes)
    doc["listen"] = {"port": free_port()}
    cfg = tmp_path / "sidegate.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ready = free_port()
    sidegate = [sys.executable, "-m", "extproc.cli"]
    extproc = subprocess.Popen(
        [
            *sidegate,
            "extproc",
            "-c",
            str(cfg),
            "--socket",
            str(run_dir / "extproc.sock"),
            "--envoy-dir",
            str(run_dir),
            "--admin-socket",
            str(run_dir / "envoy-admin.sock"),
            "--ready-port",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    procs = [extproc]
    try:
        # The startup probe the injector gives the ext_proc container.
        health = subprocess.run(
            [
                *sidegate,
                "health",
                "--socket",
                str(run_dir / "extproc.sock"),
                "--envoy-dir",
                str(run_dir),
                "--wait",
                "20",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert health.returncode == 0, health.stderr
        envoy = subprocess.Popen(
            [find_envoy(), "-c", str(run_dir / "envoy.yaml"), "--disable-hot-restart"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.insert(0, envoy)
        _eventually(
            lambda: _get(f"http://127.0.0.1:{ready}/ready")[0] == 200, "Envoy's /ready to answer"
        )
        yield {"cfg": cfg, "doc": doc, "ready": ready, "port": doc["listen"]["port"]}
    finally:
        for p in procs:  # Envoy first, as the kubelet stops native sidecars in reverse
            p.send_signal(signal.SIGTERM)
            p.communicate(timeout=15)  # also closes our ends of its pipes


def test_sidecar_containers_serve_and_reload(sidecar: dict[str, Any]) -> None:
    ready = sidecar["ready"]
    assert _get(f"http://127.0.0.1:{ready}/ready")[0] == 200
    # The readiness port is not the admin API.
    assert _get(f"http://127.0.0.1:{ready}/stats")[0] == 404
    assert _get(f"http://127.0.0.1:{ready}/quitquitquit")[0] == 404

    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{sidecar['port']}/v1", api_key="x", max_retries=0
    )
    reply = client.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "a"}]
    )
    assert reply.choices[0].message.content == "Hello from oa! You said: a"

    doc = sidecar["doc"]
    doc["routes"]["fast"] = [["gpt-4o-b"]]
    _write_atomically(sidecar["cfg"], doc)

    def switched() -> bool:
        r = client.chat.completions.create(
            model="fast", messages=[{"role": "user", "content": "b"}]
        )
        return r.choices[0].message.content == "Hello from ob! You said: b"

    _eventually(switched, "the route 'fast' to switch to openai-b")


def test_health_fails_clearly_without_a_server(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "health", "--socket", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1
    assert "no ext_proc socket at" in r.stderr

"""`kill -9` of the ext_proc under load: every response a client saw end has its audit record.

``sidegate run`` runs the ext_proc in its own process (Envoy is its child and
dies with it), so SIGKILL of that process is the crash. Eight SDK clients
keep plain and streamed requests going; the kill lands while some are in
flight. Then the log must hold a record of every request whose response a
client read to its end (the durable mode wrote it first), and after a restart
on the same files the chain must still verify end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from extproc.audit.file_sink import rotated_files
from extproc.audit.verify import verify
from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.harness import free_port, wait_until

CLIENTS = 8
COMPLETED_BEFORE_KILL = 200
LOAD_SECONDS = 60


class Run:
    """``sidegate run`` as a child process, with its output collected."""

    def __init__(self, tmp_path: Path, doc: dict[str, Any], name: str) -> None:
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        self.ready = tmp_path / f"{name}.ready"
        self.log = (tmp_path / f"{name}.out").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "extproc.cli",
                "run",
                "-c",
                str(cfg),
                "--port",
                str(doc["listen"]["port"]),
                "--ready-file",
                str(self.ready),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.output = tmp_path / f"{name}.out"

        def ready() -> bool:
            assert self.proc.poll() is None, self.output.read_text()
            return self.ready.exists() and self.ready.read_text().endswith("\n")

        wait_until(ready, "sidegate run to be ready", 30)

    def children(self) -> list[int]:
        found: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            found += [int(p) for p in (task / "children").read_text().split()]
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)
        self.log.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


@pytest.fixture
def doc(fakes: dict[str, FakeProvider], tmp_path: Path) -> Iterator[dict[str, Any]]:
    d = gateway_doc(fakes)
    d["listen"] = {"port": free_port()}
    d["envoy"] = {"concurrency": 1, "access_log": False}
    d["audit"] = {
        "file": {"path": str(tmp_path / "log" / "audit.jsonl"), "max_bytes": 65536},
        "durability": "sync",
    }
    yield d


def _load(base: str, completed: list[str], failed: list[str], stop: threading.Event) -> None:
    def client(n: int) -> None:
        with openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=10) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                rid = f"crash-{n}-{i}"
                try:
                    if i % 2:
                        chunks = list(
                            c.chat.completions.create(
                                model="gpt-4o",
                                stream=True,
                                messages=[{"role": "user", "content": "stream please"}],
                                extra_headers={"x-request-id": rid},
                            )
                        )
                        assert chunks[-1].choices[0].finish_reason == "stop"
                    else:
                        c.chat.completions.create(
                            model="smart",
                            messages=[{"role": "user", "content": "hi"}],
                            extra_headers={"x-request-id": rid},
                        )
                except Exception:
                    failed.append(rid)
                    return  # the gateway is gone
                completed.append(rid)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_SECONDS + 30)
        assert not t.is_alive(), "a client did not finish"


def test_kill_9_loses_no_record_of_a_completed_response(
    doc: dict[str, Any], tmp_path: Path
) -> None:
    run = Run(tmp_path, doc, "first")
    envoys = run.children()
    completed: list[str] = []
    failed: list[str] = []
    stop = threading.Event()
    base = f"http://127.0.0.1:{doc['listen']['port']}"
    loader = threading.Thread(target=_load, args=(base, completed, failed, stop), daemon=True)
    loader.start()
    try:
        wait_until(
            lambda: len(completed) >= COMPLETED_BEFORE_KILL,
            f"{COMPLETED_BEFORE_KILL} completed requests",
            LOAD_SECONDS,
        )
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(10)
    finally:
        stop.set()
        loader.join(LOAD_SECONDS + 40)
        run.log.close()
        for pid in envoys:  # Envoy gets SIGTERM when its parent dies; never leave one behind
            if _alive(pid):
                wait_until(lambda pid=pid: not _alive(pid), "Envoy to exit after its parent", 15)
    assert failed, "no request was in flight when the ext_proc was killed: not under load"

    path = Path(doc["audit"]["file"]["path"])
    files = [p for _, p in rotated_files(path)] + [path]
    lines = [line for f in files for line in f.read_bytes().splitlines(keepends=True)]
    recorded = set()
    for line in lines:
        if line.endswith(b"\n"):  # a torn last line is the crash's; no client saw its end
            recorded.add(json.loads(line).get("request_id"))
    missing = [rid for rid in completed if rid not in recorded]
    assert not missing, f"{len(missing)} of {len(completed)} completed responses have no record"
    assert len(files) > 1, "the load should have rotated the log"

    # Restarted on the same files: the chain goes on and verifies end to end.
    again = Run(tmp_path, doc, "second")
    try:
        with openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0) as c:
            c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "after"}],
                extra_headers={"x-request-id": "after-restart"},
            )
    finally:
        again.stop()
    files = [p for _, p in rotated_files(path)] + [path]
    report = verify(files)
    assert report.intact, [str(p) for p in report.problems]
    records = [json.loads(line) for f in files for line in f.read_bytes().splitlines()]
    assert records[-1]["request_id"] == "after-restart"
    assert sum(r["kind"] == "start" for r in records) == 2
    print(
        f"completed {len(completed)}, in flight at the kill {len(failed)}, "
        f"records {sum(r['kind'] == 'request' for r in records)}, files {len(files)}, "
        f"torn tail cut: {any(r['kind'] == 'recovered' for r in records)}"
    )

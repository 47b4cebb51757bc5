"""``sidegate run`` as a child process with its probe port, for the metrics tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.harness import free_port, wait_until


class CollectedOutput:
    """A child process whose output is collected as it comes, so a test can wait on it."""

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


class SidegateRun(CollectedOutput):
    """``sidegate run --ready-port``; its output is kept so a failure can show it."""

    def __init__(self, tmp_path: Path, doc: dict[str, Any], ready_port: int | None = None) -> None:
        cfg = tmp_path / "sidegate.yaml"
        cfg.write_text(yaml.safe_dump(doc))
        self.ready_file = tmp_path / "ready"
        self.port, self.ready_port = free_port(), ready_port or free_port()
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "extproc.cli", "run", "-c", str(cfg),
                "--port", str(self.port), "--ready-port", str(self.ready_port),
                "--ready-file", str(self.ready_file),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
        super().__init__(proc)

    def wait_ready(self) -> SidegateRun:
        def ready() -> bool:
            assert self.proc.poll() is None, f"sidegate run exited:\n{self.output}"
            return self.ready_file.exists() and self.ready_file.read_text().endswith("\n")

        wait_until(ready, "sidegate run to write its --ready-file", 30)
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def probe(self) -> str:
        return f"http://127.0.0.1:{self.ready_port}"

    def get(self, path: str, method: str = "GET") -> httpx.Response:
        with httpx.Client(timeout=15) as h:
            return h.request(method, f"{self.probe}{path}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.output

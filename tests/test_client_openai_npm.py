"""The openai npm package under Node, configured by base URL only, through a real sidegate.

Node comes from the distribution (CI installs it); the package is installed at
test time from the npm registry into a directory of this test's own, pinned.
Without Node the test skips on a laptop and fails under CI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.ci import skip_or_fail
from tests.client_gateway import CHAT_MODELS, client_doc, provider_of
from tests.harness import GatewayProcess

# 6.x: 7.x needs Node 22, and Debian's nodejs is 20.
OPENAI_NPM = "openai@6.30.1"
SCRIPT = Path(__file__).parent / "js" / "openai_npm_client.mjs"


@pytest.fixture(scope="module")
def node_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        skip_or_fail("node and npm are not installed (apt-get install nodejs npm)")
    project = tmp_path_factory.mktemp("openai-npm")
    (project / "package.json").write_text('{"private": true, "type": "module"}')
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--silent", OPENAI_NPM],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"npm install {OPENAI_NPM} failed:\n{done.stderr[-2000:]}"
    shutil.copy(SCRIPT, project / SCRIPT.name)
    return project


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(client_doc(fakes)).start()
    yield gw
    gw.stop()


def test_openai_npm_package(
    node_project: Path, gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [node, SCRIPT.name, gateway.base, *CHAT_MODELS],
        cwd=node_project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out: Any = json.loads(done.stdout)
    for model in CHAT_MODELS:
        r = out["models"][model]
        name = provider_of(fakes, model).name
        assert r["content"] == f"Hello from {name}! You said: hello from node", model
        assert r["usage"]["total_tokens"] > 0
        assert r["chunks"] > 3 and r["streamed"] == f"Hello from {name}! You said: stream from node"
        assert r["streamUsage"]["total_tokens"] > 0
        assert r["toolArgs"] == {"city": "test", "days": 1}
        assert r["afterTool"]["finish"] == "stop" and "Hello from" in r["afterTool"]["content"]
        assert r["structured"] == {"city": "test", "rain": True}
        assert r["structuredFinish"] == "stop"
    assert {"gpt-4o", "claude-sonnet", "embed", "fast"} <= set(out["list"])
    assert out["embedding"] == [pytest.approx([0.1, -0.2, 0.3])] * 2
    assert out["refusal"] == {"status": 400, "param": "n", "code": "unsupported_for_provider"}

"""instructor on the openai SDK, configured by base URL only, through a real sidegate.

TOOLS mode (a forced function call), JSON mode (``json_object`` with the schema
in the prompt) and JSON_SCHEMA mode (``json_schema``), whole and as partial
streams, on OpenAI- and Anthropic-backed models.

instructor runs in a venv of its own, installed at test time from PyPI: it
caps jiter below what current openai SDKs need, so in the test venv it would
pull every other test's openai SDK back by dozens of releases.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.client_gateway import CHAT_MODELS, OPENAI_BACKED, client_doc, provider_of
from tests.harness import GatewayProcess

INSTRUCTOR = "instructor==1.17.0"
SCRIPT = Path(__file__).parent / "clients" / "instructor_client.py"
EXPECTED = {
    "name": "test",
    "age": 1,
    "verified": True,
    "tags": ["test"],
    "address": {"city": "test", "zip_code": 1},
}


@pytest.fixture(scope="module")
def instructor_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("instructor-venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", INSTRUCTOR],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"pip install {INSTRUCTOR} failed:\n{done.stderr[-2000:]}"
    return python


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(client_doc(fakes)).start()
    yield gw
    gw.stop()


@pytest.mark.parametrize("model", CHAT_MODELS)
def test_instructor_modes(
    instructor_python: Path, gateway: GatewayProcess, fakes: dict[str, FakeProvider], model: str
) -> None:
    done = subprocess.run(
        [str(instructor_python), str(SCRIPT), gateway.base, model],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out: Any = json.loads(done.stdout)
    assert set(out) == {"TOOLS", "JSON", "JSON_SCHEMA"}
    for mode, r in out.items():
        assert r["is_user"] and r["user"] == EXPECTED, mode
        assert r["partials"] > 1 and r["last_partial"] == EXPECTED, mode  # built up as it streamed
        if mode == "TOOLS":
            assert r["finish_reason"] == "tool_calls" and r["tool_calls"], mode
        else:
            # On every model the answer is the content, even where a tool carried it.
            assert r["finish_reason"] == "stop" and not r["tool_calls"], mode
            assert json.loads(r["content"]) == EXPECTED, mode
    sent = [r.json() for r in provider_of(fakes, model).requests]
    assert len(sent) == 6  # three modes, whole and streamed
    if model != OPENAI_BACKED:
        # TOOLS forces instructor's own tool; the JSON modes arrive as Anthropic
        # structured output (a forced output tool, or output_config natively).
        assert sent[0]["tool_choice"] == {"type": "tool", "name": "User"}
        assert sent[2]["tool_choice"] == {"type": "tool", "name": "json_output"}

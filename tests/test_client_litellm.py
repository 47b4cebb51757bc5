"""LiteLLM's SDK with ``api_base`` pointing at a real sidegate.

``litellm.completion`` (whole and streamed, a tools round trip,
``response_format``) and ``litellm.embedding``, on OpenAI- and
Anthropic-backed models: LiteLLM talks to sidegate as to any
OpenAI-compatible server (``openai/<model>``).

LiteLLM runs in a process of its own (the test venv's Python): at import it
sets process-wide environment (TIKTOKEN_CACHE_DIR) and it leaves an event
loop unclosed, which would fail later tests of this session.
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
from tests.client_gateway import CHAT_MODELS, client_doc, provider_of
from tests.harness import GatewayProcess

SCRIPT = Path(__file__).parent / "clients" / "litellm_client.py"


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(client_doc(fakes)).start()
    yield gw
    gw.stop()


def test_litellm_sdk(gateway: GatewayProcess, fakes: dict[str, FakeProvider]) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), gateway.base, *CHAT_MODELS],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    # The last line: LiteLLM prints notices of its own before it.
    out: Any = json.loads(done.stdout.strip().splitlines()[-1])
    for model in CHAT_MODELS:
        r = out["models"][model]
        name = provider_of(fakes, model).name
        assert r["content"] == f"Hello from {name}! You said: hi", model
        usage = r["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
        assert r["chunks"] > 3 and r["streamed"] == f"Hello from {name}! You said: stream it"
        assert r["stream_usage"] > 0, model
        for mode in ("whole", "streamed"):
            assert r[f"tool_args_{mode}"] == {"city": "test", "celsius": True}, model
            assert r[f"after_tool_{mode}"] == {"finish": "stop", "tool_calls": False}, model
            assert r[f"structured_{mode}"] == {"city": "test", "high": 1.5}, model
    assert out["embedding_index"] == [0, 1]
    assert out["embedding"] == [pytest.approx([0.1, -0.2, 0.3])] * 2
    sent = fakes["oa"].requests[-1].json()
    assert sent["model"] == "text-embedding-3-small" and sent["input"] == ["a", "b"]

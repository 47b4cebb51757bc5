"""The first-byte timeout and the stream idle timeout are two timers.

``timeouts.first_byte`` fails an attempt over while its response has not
started; once it has, only ``timeouts.stream_idle`` bounds the silence between
chunks. A single per-try idle timer did both jobs before, and cut slow streams
whose gaps, counting events the gateway drops, exceeded the first-byte timeout.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess

# The openai SDK's transport: httpx before 3.x, its fork httpx2 since. A cut
# mid-stream surfaces as the transport's own protocol error, not an APIError.
try:
    import httpx2

    CUT: tuple[type[BaseException], ...] = (openai.APIError, httpx.HTTPError, httpx2.HTTPError)
except ImportError:  # an SDK on httpx
    CUT = (openai.APIError, httpx.HTTPError)


def test_a_slow_stream_outlives_the_first_byte_timeout(client: openai.OpenAI) -> None:
    # first_byte is 1 s in the test config. 0.7 s between events, and the
    # gateway drops the usage event it forces: a 1.4 s gap the client sees.
    start = time.monotonic()
    chunks = list(
        client.chat.completions.create(
            model="fast",
            stream=True,
            messages=[{"role": "user", "content": "slow"}],
            extra_headers={"x-fake-fault-oa": "chunk_delay=0.7"},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from oa! You said: slow"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert time.monotonic() - start > 3  # it really was slow, past several first-byte timeouts


def test_stream_idle_bounds_the_silence_between_chunks(fakes: dict[str, FakeProvider]) -> None:
    doc = gateway_doc(fakes)
    doc["timeouts"] = {"first_byte": "5s", "stream_idle": "1s"}
    gw = GatewayProcess(doc).start()
    try:
        client = openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0, timeout=30)
        start = time.monotonic()
        received: list[str] = []
        with pytest.raises(CUT):
            for c in client.chat.completions.create(
                model="fast",
                stream=True,
                messages=[{"role": "user", "content": "a b c d e f"}],
                extra_headers={"x-fake-fault-oa": "chunk_delay=2"},
            ):
                received.extend(x.delta.content or "" for x in c.choices)
        # Cut at the first 2 s gap (the first event came at once), not at the end.
        assert time.monotonic() - start < 4
        assert "".join(received) == ""
    finally:
        gw.stop()

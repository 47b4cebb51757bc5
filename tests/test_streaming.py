"""Streams are passed chunk by chunk, never buffered whole."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.harness import GatewayProcess


@pytest.mark.parametrize(
    ("model", "fault"), [("fast", "x-fake-fault-oa"), ("smart", "x-fake-fault-an")]
)
def test_first_chunk_arrives_long_before_the_last(
    gateway: GatewayProcess, model: str, fault: str
) -> None:
    client = openai.OpenAI(base_url=f"{gateway.base}/v1", api_key="x", max_retries=0)
    stream = client.chat.completions.create(
        model=model,
        stream=True,
        messages=[{"role": "user", "content": "one two three four"}],
        extra_headers={fault: "chunk_delay=0.2"},
    )
    arrivals = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    # 8+ events 200 ms apart: buffered, every chunk would arrive at once at the end.
    assert len(arrivals) >= 6
    assert arrivals[-1] - arrivals[0] >= 1.0
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(g > 0.1 for g in gaps) >= len(gaps) - 1


def test_a_request_body_uploaded_slowly_is_served(gateway: GatewayProcess) -> None:
    # The stages hold the request until its body has arrived: a client that
    # takes longer than Envoy's per-message timeout to send it must not get a 504.
    body = b'{"model": "fast", "messages": [{"role": "user", "content": "slow upload"}]}'

    def trickle() -> Iterator[bytes]:
        for i in range(0, len(body), 16):
            yield body[i : i + 16]
            time.sleep(0.2)

    started = time.monotonic()
    r = httpx.post(
        f"{gateway.base}/v1/chat/completions",
        content=trickle(),
        headers={"content-type": "application/json", "authorization": "Bearer x"},
        timeout=10,
    )
    assert time.monotonic() - started >= 0.8
    assert r.status_code == 200, r.text
    assert "slow upload" in r.json()["choices"][0]["message"]["content"]

"""sidegate's own share of a request's ext_proc CPU: the stages' handlers with no gRPC around them.

Drives ``PolicyStream`` and ``ProviderStream`` in process through ``tests/stage_harness.py`` (the
messages Envoy would send) and prints CPU per policy message, per provider request and per streamed
chunk. The harness's own message building is included, so these are upper bounds.

    .venv/bin/python docs/research/envoy-hot-path/handler_share.py    (from the repository root)
"""

import json
import os
import sys
import time

sys.path.insert(0, os.getcwd())
os.environ.setdefault("SG_STAGE_OA", "sk-oa-0123456789")
os.environ.setdefault("SG_STAGE_AN", "sk-an-0123456789")

from tests.stage_harness import Stages, response_body, response_headers  # noqa: E402
from tests.test_stages import CHAT, DOC  # noqa: E402

N = 2000
BODY = {
    "model": "gpt",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant. " * 10},
        {"role": "user", "content": "Summarise: " + "lorem ipsum dolor sit amet " * 40},
    ],
}


def main() -> None:
    doc = {k: v for k, v in DOC.items() if k != "quotas"}
    with Stages(doc) as st:
        for _ in range(50):
            routed, policy = st.policy(CHAT, BODY)
            _, attempt = st.attempt(routed, "oa")
            attempt.close()
            policy.close()
        c0 = time.process_time()
        for _ in range(N):
            _, policy = st.policy(CHAT, BODY)
            policy.close()
        print(f"policy stage, one message: {1e3 * (time.process_time() - c0) / N:.3f} ms")
        routed, policy = st.policy(CHAT, dict(BODY, stream=True))
        c0 = time.process_time()
        for _ in range(N):
            _, attempt = st.attempt(routed, "oa")
            attempt.close()
            st.gateway.requests.attach(routed.state)
        print(f"provider stage request: {1e3 * (time.process_time() - c0) / N:.3f} ms")
        _, attempt = st.attempt(routed, "oa")
        attempt.handle(response_headers({":status": "200", "content-type": "text/event-stream"}))
        event = {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}],
        }
        chunk = response_body(f"data: {json.dumps(event)}\n\n".encode(), end_of_stream=False)
        c0 = time.process_time()
        for _ in range(N * 10):
            attempt.handle(chunk)
        print(f"provider stage, a streamed chunk: {1e6 * (time.process_time() - c0) / (N * 10):.1f} us")


if __name__ == "__main__":
    main()

"""``sidegate.v1.Stats/Messages``: the ext_proc's message counters, as JSON.

Served on the ext_proc's own socket (mode 0600, Envoy's uid only) so that
``sidegate bench`` can charge each request shape its messages. Counts only:
nothing in the answer comes from a request.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from .message_count import MessageCounts

SERVICE = "sidegate.v1.Stats"
MESSAGES = f"/{SERVICE}/Messages"


def handler(counts: MessageCounts) -> grpc.GenericRpcHandler:
    async def messages(request: bytes, context: Any) -> bytes:
        return json.dumps(counts.snapshot()).encode()

    return grpc.method_handlers_generic_handler(
        SERVICE, {"Messages": grpc.unary_unary_rpc_method_handler(messages)}
    )


def read(socket: str, timeout: float = 5.0) -> dict[str, dict[str, int]]:
    """The counters of the ext_proc serving on ``socket``."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        answer = channel.unary_unary(MESSAGES)(b"", timeout=timeout, wait_for_ready=True)
    result: dict[str, dict[str, int]] = json.loads(answer)
    return result

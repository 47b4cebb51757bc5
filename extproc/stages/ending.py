"""The end of a response: a reply that gives the app the last of it waits for ``ending``.

The durable audit log must hold a record before the app sees its response
end (``audit.listener``). A stage's replies are checked here: one that ends
the app's response (a refusal or error sent in place of a response, the last
body chunk, the trailers, the headers of a response without a body) is sent
only once what ``RequestTable.ending`` returned has finished, for at most a
bound: under ``message_timeout`` where Envoy applies one, longer on a
FULL_DUPLEX body where it does not (see README, "Audit log").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

log = logging.getLogger(__name__)

# A reply Envoy times (headers, an immediate response) may wait this long:
# below the shortest message_timeout (0.5 s, envoy.bootstrap.message_timeout).
REPLY_WAIT = 0.4
# A FULL_DUPLEX body or trailers reply has no message timeout (only the
# stream's idle timeout, far longer): a slow disk gets longer.
STREAM_WAIT = 5.0
# A late write is logged at most this often.
LOG_EVERY = 60.0
_last_logged = 0.0


def wait_for(req: pb.ProcessingRequest, resp: pb.ProcessingResponse) -> float | None:
    """How long ``resp`` (the reply to ``req``) may wait, if it ends the app's response."""
    which = resp.WhichOneof("response")
    if which == "immediate_response":
        return REPLY_WAIT
    if which == "response_body":
        if resp.response_body.response.body_mutation.streamed_response.end_of_stream:
            return STREAM_WAIT
        return None
    if which == "response_trailers":
        return STREAM_WAIT
    if which == "response_headers" and req.WhichOneof("request") == "response_headers":
        return REPLY_WAIT if req.response_headers.end_of_stream else None
    return None


def ends(req: pb.ProcessingRequest, out: Sequence[pb.ProcessingResponse]) -> float | None:
    return wait_for(req, out[-1]) if out else None


async def hold(waits: list[Awaitable[object]], limit: float) -> None:
    """Wait for ``waits``, for at most ``limit`` seconds (then the response goes on)."""
    global _last_logged
    if not waits:
        return
    try:
        await asyncio.wait_for(asyncio.gather(*waits), limit)
    except TimeoutError:
        now = time.monotonic()
        if now - _last_logged >= LOG_EVERY:
            _last_logged = now
            log.error(
                "a response's end waited %.1fs for its audit record and went on without it "
                "(the record is still queued); is the audit sink's disk slow?",
                limit,
            )

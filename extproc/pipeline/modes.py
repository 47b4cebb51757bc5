"""The Envoy processing modes of each stage, from what the pipeline's parts need.

What no step, listener or stage reads is not sent to Python: a message costs
a gRPC frame each way and a task switch (``sidegate bench``, messages/req).
"""

from __future__ import annotations

from collections.abc import Iterable

from .step import Needs, Step

_RESPONSE = Needs.RESPONSE_HEADERS | Needs.RESPONSE_BODY | Needs.STREAM_CHUNKS


def policy_mode(steps: Iterable[Step]) -> dict[str, str]:
    """The policy filter on a model call's path: one message, the whole request.

    The body alone (request headers SKIP), with the few headers the steps
    read sent along as attributes (``stages.policy.attributes``): a headers message
    would cost a gRPC round trip of its own. Envoy holds the headers in the
    buffer filter after this one until the body reply re-routes the request.
    Response modes stay off here: Envoy merges a router-level filter's
    per-route mode from the route matched at header time, before the policy
    stage picks the route, so the response is the provider stage's to read.
    """
    body = any(Needs.REQUEST_BODY in step.needs for step in steps)
    return {
        "request_header_mode": "SKIP" if body else "SEND",
        "request_body_mode": "BUFFERED" if body else "NONE",
        "response_header_mode": "SKIP",
        "response_body_mode": "NONE",
    }


def policy_refusal_mode() -> dict[str, str]:
    """The policy filter on every other path: the headers, which it refuses or answers.

    (A per-route mode replaces the whole mode, so every field is stated.)
    """
    return {
        "request_header_mode": "SEND",
        "request_body_mode": "NONE",
        "response_header_mode": "SKIP",
        "response_body_mode": "NONE",
    }


def provider_mode(needs: Needs) -> dict[str, str]:
    """The provider filter: the request from its headers alone; the response as ``needs`` says.

    The request body is never sent: the headers reply replaces the whole
    request (CONTINUE_AND_REPLACE). A response body that is read is read chunk
    by chunk (FULL_DUPLEX_STREAMED, which needs trailers sent), and its
    headers too, since a rewritten body changes them.
    """
    body = bool(needs & (Needs.RESPONSE_BODY | Needs.STREAM_CHUNKS))
    return {
        "request_header_mode": "SEND",
        "request_body_mode": "NONE",
        "response_header_mode": "SEND" if needs & _RESPONSE else "SKIP",
        "response_body_mode": "FULL_DUPLEX_STREAMED" if body else "NONE",
        "response_trailer_mode": "SEND" if body else "SKIP",
    }

"""The two ext_proc stages in process, fed the ``ProcessingRequest`` messages Envoy sends.

A stage test needs no Envoy and no gRPC: ``Stages`` builds a real ``Gateway``
from a config, runs the policy stage's message (a model call's buffered body,
with the headers it reads as attributes; the headers alone for any other
path) through ``PolicyStream``, routes and edits the headers the way Envoy's
route does, and then plays attempts through ``ProviderStream``: request
headers with the attempt number attribute (answered with the whole request), the provider's response
headers, body chunks (split wherever the test likes) and trailers. What a
stage answers is returned decoded: status, headers and JSON or SSE body.

It stops where Envoy's own work starts (routing between priority groups,
retries, the local reply mapper): tests of that run real Envoy (``harness``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from extproc import forwarding
from extproc.config import GatewayConfig, parse_config
from extproc.endpoints import proxy_paths
from extproc.gateway import Gateway
from extproc.stages.policy import (
    METADATA_NAMESPACE,
    REQUEST_ID,
    REQUEST_ID_KEY,
    ROUTE_HEADER,
    ROUTE_KEY,
    PolicyStream,
    attributes,
)
from extproc.stages.provider import ATTEMPT_ATTR, ProviderStream
from extproc.state import RequestState

# --- messages Envoy sends -----------------------------------------------------------


def header_map(headers: Mapping[str, str]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(
        headers=[
            base_pb2.HeaderValue(key=k.lower(), raw_value=v.encode("latin-1"))
            for k, v in headers.items()
        ]
    )


def request_headers(headers: Mapping[str, str], *, end_of_stream: bool = False) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=header_map(headers), end_of_stream=end_of_stream)
    )


def request_body(body: bytes) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True))


def with_attributes(
    req: pb.ProcessingRequest, names: Iterable[str], headers: Mapping[str, str]
) -> pb.ProcessingRequest:
    """The CEL attributes ``names`` as Envoy evaluates them on ``headers`` (absent: left out)."""
    attrs = struct_pb2.Struct()
    for name in names:
        if name == "request.path":
            value = headers.get(":path")
        elif name == "request.method":
            value = headers.get(":method")
        else:
            value = headers.get(name[len("request.headers['") : -2])
        if value is not None:
            attrs.fields[name].string_value = value
    req.attributes["envoy.filters.http.ext_proc"].CopyFrom(attrs)
    return req


def response_headers(headers: Mapping[str, str], *, end_of_stream: bool = False) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(
        response_headers=pb.HttpHeaders(headers=header_map(headers), end_of_stream=end_of_stream)
    )


def response_body(chunk: bytes, *, end_of_stream: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=chunk, end_of_stream=end_of_stream))


def with_attempt(req: pb.ProcessingRequest, attempt: int) -> pb.ProcessingRequest:
    """The attribute Envoy attaches to the provider stage's first message of each attempt."""
    attrs = struct_pb2.Struct()
    attrs.fields[ATTEMPT_ATTR].number_value = attempt
    req.attributes["envoy.filters.http.ext_proc"].CopyFrom(attrs)
    return req


# --- what the stages answer -------------------------------------------------------------


@dataclass
class Reply:
    """An immediate response: what the client receives instead of a provider's answer."""

    status: int
    headers: dict[str, str]
    body: bytes
    details: str

    def json(self) -> Any:
        return json.loads(self.body)


def apply_mutation(headers: dict[str, str], m: pb.HeaderMutation) -> None:
    """What Envoy does with a ``HeaderMutation``: removals, then sets (overwrite)."""
    for name in m.remove_headers:
        headers.pop(name, None)
    for opt in m.set_headers:
        value = opt.header.raw_value.decode("latin-1") if opt.header.raw_value else opt.header.value
        headers[opt.header.key] = value


def immediate(resp: pb.ProcessingResponse) -> Reply | None:
    if resp.WhichOneof("response") != "immediate_response":
        return None
    ir = resp.immediate_response
    headers: dict[str, str] = {}
    apply_mutation(headers, ir.headers)
    return Reply(ir.status.code, headers, ir.body, ir.details)


@dataclass
class Routed:
    """A request the policy stage admitted: the headers Envoy routes with, and its state."""

    headers: dict[str, str]
    body: bytes
    state: RequestState | None  # None: a request the policy stage never saw
    route: str = ""  # the plan key the route matched on (dynamic metadata)


@dataclass
class Upstream:
    """What one attempt sends to the provider after the provider stage."""

    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ClientResponse:
    """What the client receives from one attempt, after the provider stage."""

    headers: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)
    ended: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def json(self) -> Any:
        return json.loads(self.body)

    def sse_data(self) -> list[str]:
        """The ``data:`` payloads of an SSE body, in order."""
        return [
            line[len("data: ") :]
            for line in self.body.decode().split("\n")
            if line.startswith("data: ")
        ]


# --- the harness --------------------------------------------------------------------


class Stages:
    """A gateway's two stages, driven message by message. Use as a context manager."""

    def __init__(self, config: GatewayConfig | Mapping[str, Any]) -> None:
        self.config = config if isinstance(config, GatewayConfig) else parse_config(dict(config))
        self.loop = asyncio.new_event_loop()
        self.gateway = Gateway(self.config)
        self.completed: list[RequestState] = []
        self.gateway.on_complete(self.completed.append)

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.loop.run_until_complete(self.gateway.close())
        self.loop.close()

    # -- policy stage --

    def _policy(self, stream: PolicyStream, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        async def collect() -> list[pb.ProcessingResponse]:
            return [resp async for resp in stream.handle(req)]

        return self.loop.run_until_complete(collect())

    def policy(
        self,
        path: str,
        body: Any,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> tuple[Routed | Reply, PolicyStream]:
        """Run one request through the policy stage. The stream stays open (like Envoy's,
        until the response is done): pass it to ``finish`` or close it."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        h = {
            ":method": method,
            ":path": path,
            "content-type": "application/json",
            "content-length": str(len(raw)),
            **(headers or {}),
        }
        h = {k.lower(): v for k, v in h.items()}
        stream = PolicyStream(self.gateway)
        if (path.split("?", 1)[0], method) not in self._entries:
            # Envoy's catch-all route: the headers alone, which the stage refuses.
            out = self._policy(stream, request_headers(h, end_of_stream=method == "GET"))
            assert len(out) == 1, out
            reply = immediate(out[0])
            assert reply is not None, out[0]
            return reply, stream
        identity = self.config.quota.identity
        out = self._policy(stream, with_attributes(request_body(raw), attributes(identity), h))
        # A slow admission first asks Envoy for more time; the answer is the last message.
        reply = immediate(out[-1])
        if reply is not None:
            return reply, stream
        resp = out[-1]
        common = resp.request_body.response
        assert common.clear_route_cache, "a routed request must clear Envoy's route cache"
        # Envoy drops the reply's header mutation (the headers were not sent),
        # but clears the route cache only for a reply that has one.
        assert common.HasField("header_mutation")
        meta = resp.dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields
        # What the route then does (envoy_bootstrap._route).
        for name in (ROUTE_HEADER, *forwarding.CREDENTIALS, identity.user_header, identity.tenant_header):
            h.pop(name, None)
        h[REQUEST_ID] = meta[REQUEST_ID_KEY].string_value
        assert stream.state is not None
        return Routed(h, raw, stream.state, route=meta[ROUTE_KEY].string_value), stream

    @property
    def _entries(self) -> set[tuple[str, str]]:
        return {(path, "POST") for path, _ in proxy_paths()}

    # -- provider stage --

    def attempt(
        self, routed: Routed, provider: str, attempt: int = 1
    ) -> tuple[Upstream | Reply, ProviderStream]:
        """Play one attempt's request through ``provider``'s stage."""
        stream = ProviderStream(self.gateway, self.config.providers[provider])
        h = {k: v for k, v in routed.headers.items() if k != ROUTE_HEADER}
        # One message an attempt: the body is replaced from the headers reply.
        out = stream.handle(with_attempt(request_headers(h), attempt))
        assert len(out) == 1
        reply = immediate(out[0])
        if reply is not None:
            return reply, stream
        common = out[0].request_headers.response
        assert common.status == pb.CommonResponse.CONTINUE_AND_REPLACE, common
        apply_mutation(h, common.header_mutation)
        # What Envoy does with a replaced body; the upstream buffer filter sets it again.
        h.pop("content-length", None)
        body = common.body_mutation.body
        h["content-length"] = str(len(body))
        return Upstream(h, body), stream

    def respond(
        self,
        stream: ProviderStream,
        status: int,
        headers: Mapping[str, str],
        chunks: Iterable[bytes],
    ) -> ClientResponse:
        """Feed the provider's response through the stage, chunk by chunk (full duplex)."""
        chunks = list(chunks)
        h = {":status": str(status), **headers}
        [resp] = stream.handle(response_headers(h, end_of_stream=not chunks))
        apply_mutation(h, resp.response_headers.response.header_mutation)
        client = ClientResponse(h)
        for i, chunk in enumerate(chunks):
            for out in stream.handle(response_body(chunk, end_of_stream=i == len(chunks) - 1)):
                streamed = out.response_body.response.body_mutation.streamed_response
                client.chunks.append(streamed.body)
                client.ended = client.ended or streamed.end_of_stream
        return client

    def finish(self, *streams: PolicyStream | ProviderStream) -> None:
        """Envoy closes the request's streams; the last one completes the request."""
        for s in streams:
            s.close()

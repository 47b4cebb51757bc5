"""The gRPC ext_proc service: one ``Process`` stream per request stage.

Which stage a stream belongs to comes from the gRPC initial metadata Envoy
sends (``x-sidegate-stage: policy`` or ``provider:<name>``), written into the
generated bootstrap, so one socket serves both stages.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import traceback
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from ..gateway import Gateway
from . import ending, health_service, stats_service
from .policy import PolicyStream
from .provider import ProviderStream

log = logging.getLogger(__name__)

STAGE_METADATA = "x-sidegate-stage"
MAX_MESSAGE = 64 * 1024 * 1024
SOCKET_MODE = 0o600


class _Stream(Protocol):
    @property
    def request_id(self) -> str: ...

    def handle(self, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]: ...

    def fail(self, which: str | None) -> list[pb.ProcessingResponse]: ...

    def end_wait(
        self, req: pb.ProcessingRequest, out: list[pb.ProcessingResponse]
    ) -> float | None: ...

    def ending(self) -> list[Awaitable[object]]: ...

    def close(self) -> None: ...


class Processor(pb_grpc.ExternalProcessorServicer):  # type: ignore[misc]
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway

    def _stream_for(self, stage: str) -> _Stream | PolicyStream | None:
        if stage == "policy":
            return PolicyStream(self.gw)
        if stage.startswith("provider:"):
            provider = self.gw.config.providers.get(stage[len("provider:") :])
            if provider is not None:
                return ProviderStream(self.gw, provider)
        return None

    async def Process(
        self, request_iterator: AsyncIterator[pb.ProcessingRequest], context: Any
    ) -> AsyncIterator[pb.ProcessingResponse]:
        stage = ""
        for key, value in context.invocation_metadata() or ():
            if key == STAGE_METADATA:
                stage = value
        stream = self._stream_for(stage)
        if stream is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown stage {stage!r}")
            return
        kind = "policy" if isinstance(stream, PolicyStream) else "provider"
        counts = self.gw.messages
        counts.streams[kind] += 1
        per_kind = counts.messages[kind]
        try:
            async for req in request_iterator:
                which = req.WhichOneof("request")
                per_kind[which] = per_kind.get(which, 0) + 1
                try:
                    if isinstance(stream, PolicyStream):
                        # Two messages a request, and it may wait on quota state
                        # (and say so to Envoy before it does): an async generator.
                        async for resp in stream.handle(req):
                            if (limit := ending.wait_for(req, resp)) is not None:
                                await ending.hold(stream.ending(), limit)
                            yield resp
                    else:
                        # The provider stage answers each body chunk at once: no
                        # awaits to pay for, but at the response's end.
                        out = stream.handle(req)
                        if (limit := stream.end_wait(req, out)) is not None:
                            await ending.hold(stream.ending(), limit)
                        for resp in out:
                            yield resp
                except Exception as e:
                    # A bug or an input no check foresaw: never a dead stream
                    # (Envoy would answer an empty 500), always an error in
                    # the caller's format.
                    _log_failure(stage, stream.request_id, which, e)
                    self.gw.telemetry.extproc_error(kind)
                    out = stream.fail(which)
                    if (limit := stream.end_wait(req, out)) is not None:
                        await ending.hold(stream.ending(), limit)
                    for resp in out:
                        yield resp
        finally:
            stream.close()


def _log_failure(stage: str, request_id: str, which: str | None, exc: Exception) -> None:
    # The exception's message and the frames' locals may quote the request
    # (a prompt, a key): log its type and where it was raised, never its text.
    # The innermost frames only: a RecursionError has a thousand.
    frames = traceback.extract_tb(exc.__traceback__, limit=-6)
    where = " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    log.error(
        "%s stage failed on %s of request %r: %s at %s",
        stage,
        which,
        request_id[:64],
        type(exc).__name__,
        where,
    )


async def start_server(gateway: Gateway, socket_path: str) -> grpc.aio.Server:
    """Serve on ``socket_path``, which only this uid may connect to (mode 0600).

    The socket hands out provider keys to whoever asks for a request's
    provider stage, so only Envoy (same uid) may open it. It is bound in a
    private directory and moved into place once restricted: at its path it
    never accepts anyone else, whatever the permissions of the directory.
    """
    path = Path(socket_path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_ExternalProcessorServicer_to_server(Processor(gateway), server)
    server.add_generic_rpc_handlers(
        (health_service.handler(), stats_service.handler(gateway.messages))
    )
    private = Path(tempfile.mkdtemp(prefix=".extproc-", dir=path.parent))
    try:
        bound = private / "s"
        server.add_insecure_port(f"unix:{bound}")
        os.chmod(bound, SOCKET_MODE)
        os.replace(bound, path)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    # Before the first request: a sink that cannot open follows audit.on_failure from then on.
    await gateway.audit.start()
    await server.start()
    log.info("ext_proc listening on unix:%s", path)
    return server


def install_event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

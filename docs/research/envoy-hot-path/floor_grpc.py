"""The transport floor: server CPU of grpc ext_proc streams with no sidegate code in them.

A grpc-aio client sends STREAMS streams of MSGS ProcessingRequest messages (1.5 KB bodies) over a
Unix socket to a servicer in a child process, and reads the child's CPU time from /proc:

    python floor_grpc.py VARIANT STREAMS MSGS

VARIANT: gen  grpc-aio, async iterator in and async generator out (as extproc/stages/server.py)
         rw   grpc-aio, context.read() / context.write()
         obs  grpc-aio, reads every message and answers none (what observability mode asks)
         grpclib  the same servicer on grpclib (pure Python over h2), if installed
Run from the repository root with its .venv; compare variants alternately, several times.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

# grpc is imported only where it is used: the grpclib server's RSS must not include it.


def reply() -> pb.ProcessingResponse:
    r = pb.ProcessingResponse()
    r.request_body.SetInParent()
    return r


async def serve_grpc_aio(variant: str, sock: str) -> None:
    import grpc.aio
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

    class Gen(pb_grpc.ExternalProcessorServicer):
        async def Process(self, it, context):
            async for _ in it:
                yield reply()

    class RW(pb_grpc.ExternalProcessorServicer):
        async def Process(self, it, context):
            while (await context.read()) is not grpc.aio.EOF:
                await context.write(reply())

    class Obs(pb_grpc.ExternalProcessorServicer):
        async def Process(self, it, context):
            async for _ in it:
                pass
            if False:
                yield reply()

    opts = [tuple(o) for o in json.loads(os.environ.get("GRPC_OPTS", "[]"))]
    server = grpc.aio.server(options=opts)
    pb_grpc.add_ExternalProcessorServicer_to_server({"gen": Gen, "rw": RW, "obs": Obs}[variant](), server)
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    open(sock + ".ready", "w").close()
    await server.wait_for_termination()


async def serve_grpclib(sock: str) -> None:
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server

    class Svc:
        async def Process(self, stream):
            async for _ in stream:
                await stream.send_message(reply())

        def __mapping__(self):
            return {
                "/envoy.service.ext_proc.v3.ExternalProcessor/Process": Handler(
                    self.Process, Cardinality.STREAM_STREAM, pb.ProcessingRequest, pb.ProcessingResponse
                )
            }

    server = Server([Svc()])
    await server.start(path=sock)
    open(sock + ".ready", "w").close()
    await server.wait_closed()


def cpu_seconds(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    line = next(x for x in open(f"/proc/{pid}/status") if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


async def client(variant: str, sock: str, streams: int, msgs: int, pid: int) -> None:
    import grpc.aio
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
        stub = pb_grpc.ExternalProcessorStub(ch)
        body = pb.ProcessingRequest(request_body=pb.HttpBody(body=b"x" * 1500, end_of_stream=True))

        async def one() -> None:
            call = stub.Process()
            for _ in range(msgs):
                await call.write(body)
                if variant != "obs":
                    await call.read()
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF

        for _ in range(100):
            await one()
        c0 = cpu_seconds(pid)
        for _ in range(streams):
            await one()
        c1 = cpu_seconds(pid)
        print(
            f"{variant} {msgs} msg/stream: server CPU {1000 * (c1 - c0) / streams:.3f} ms a stream, "
            f"RSS {rss_mib(pid):.1f} MiB"
        )


def main() -> None:
    import uvloop

    if sys.argv[1] == "serve":
        uvloop.install()
        variant, sock = sys.argv[2], sys.argv[3]
        asyncio.run(serve_grpclib(sock) if variant == "grpclib" else serve_grpc_aio(variant, sock))
        return
    variant, streams, msgs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sock = os.path.join(tempfile.mkdtemp(prefix="floor-"), "s")
    child = subprocess.Popen([sys.executable, __file__, "serve", variant, sock])
    deadline = time.monotonic() + 30
    while not os.path.exists(sock + ".ready"):
        if child.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {variant} server did not start")
        time.sleep(0.05)
    try:
        uvloop.install()
        asyncio.run(client(variant, sock, streams, msgs, child.pid))
    finally:
        child.terminate()
        child.wait()


if __name__ == "__main__":
    main()

"""Minimal experiment harness: real Envoy 1.40 + Python grpc.aio ext_proc + fake upstream.

Each experiment builds an Envoy bootstrap (dict), a handler deciding ext_proc replies,
sends a few requests and prints the ProcessingRequest messages each stream received
(counted, not timed) plus what the upstream saw and what the client got.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import grpc
import httpx
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pbg
from google.protobuf import json_format

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
from extproc.runner import find_envoy  # noqa: E402

ENVOY = find_envoy()
T = "@type"
API = "type.googleapis.com/envoy"

# ---------------------------------------------------------------- logs
LOG: list[dict[str, Any]] = []  # one entry per ProcessingRequest
UPSTREAM: list[dict[str, Any]] = []  # one entry per upstream request
_sid = itertools.count(1)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def hdrs(hm: base_pb2.HeaderMap) -> dict[str, str]:
    return {h.key: (h.raw_value.decode() if h.raw_value else h.value) for h in hm.headers}


def summarize(req: pb.ProcessingRequest) -> dict[str, Any]:
    kind = req.WhichOneof("request")
    d: dict[str, Any] = {"kind": kind}
    m = getattr(req, kind)
    if kind in ("request_headers", "response_headers"):
        d["headers"] = hdrs(m.headers)
        d["eos"] = m.end_of_stream
    elif kind in ("request_body", "response_body"):
        d["len"] = len(m.body)
        d["body"] = m.body[:120].decode(errors="replace")
        d["eos"] = m.end_of_stream
    elif kind in ("request_trailers", "response_trailers"):
        d["trailers"] = hdrs(m.trailers)
    if req.attributes:
        d["attributes"] = {
            k: json_format.MessageToDict(v) for k, v in req.attributes.items()
        }
    if req.HasField("metadata_context"):
        d["metadata_context"] = json_format.MessageToDict(req.metadata_context)
    if req.HasField("protocol_config"):
        d["protocol_config"] = json_format.MessageToDict(req.protocol_config)
    if req.observability_mode:
        d["observability_mode"] = True
    return d


def hm(set_: dict[str, str] | None = None, remove: list[str] | None = None) -> pb.HeaderMutation:
    m = pb.HeaderMutation()
    for k, v in (set_ or {}).items():
        o = m.set_headers.add()
        o.header.key = k
        o.header.raw_value = v.encode()
        o.append_action = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    m.remove_headers.extend(remove or [])
    return m


def cont(kind: str) -> pb.ProcessingResponse:
    r = pb.ProcessingResponse()
    getattr(r, kind).SetInParent()
    return r


def streamed(kind: str, body: bytes, eos: bool) -> pb.ProcessingResponse:
    r = pb.ProcessingResponse()
    s = getattr(r, kind).response.body_mutation.streamed_response
    s.body = body
    s.end_of_stream = eos
    return r


Handler = Callable[[str, dict[str, Any], pb.ProcessingRequest, dict[str, Any]], list[pb.ProcessingResponse]]


def default_handler(stage: str, s: dict[str, Any], req: pb.ProcessingRequest, st: dict[str, Any]) -> list[pb.ProcessingResponse]:
    kind = s["kind"]
    if kind in ("request_body", "response_body"):
        mode = st.get("body_mode", {}).get(kind)
        if mode == "FULL_DUPLEX_STREAMED":
            m = getattr(req, kind)
            return [streamed(kind, m.body, m.end_of_stream)]
    return [cont(kind)]


class Proc(pbg.ExternalProcessorServicer):
    def __init__(self, idx: int, handler: Handler) -> None:
        self.idx = idx
        self.handler = handler

    async def Process(self, it: Any, ctx: Any) -> Any:
        md = dict(ctx.invocation_metadata() or ())
        stage = md.get("x-stage", "?")
        sid = next(_sid)
        st: dict[str, Any] = {"sid": sid}
        async for req in it:
            s = summarize(req)
            s.update(sid=sid, stage=stage, sock=self.idx)
            if "protocol_config" in s:
                pc = s["protocol_config"]
                st["body_mode"] = {
                    "request_body": pc.get("requestBodyMode", "NONE"),
                    "response_body": pc.get("responseBodyMode", "NONE"),
                }
            LOG.append(s)
            if req.observability_mode:
                continue
            for r in self.handler(stage, s, req, st):
                yield r


async def start_procs(sock_dir: str, n: int, handler: Handler) -> list[grpc.aio.Server]:
    servers = []
    for i in range(n):
        srv = grpc.aio.server()
        pbg.add_ExternalProcessorServicer_to_server(Proc(i, handler), srv)
        path = os.path.join(sock_dir, f"p{i}.sock")
        srv.add_insecure_port(f"unix:{path}")
        await srv.start()
        servers.append(srv)
    return servers


# ---------------------------------------------------------------- fake upstream
class Up(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a: Any) -> None:
        pass

    def _handle(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n) if n else b""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        rec = {
            "port": self.server.server_address[1],
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode(errors="replace"),
        }
        UPSTREAM.append(rec)
        if self.path.startswith("/status/"):
            code = int(self.path.split("/")[2])
            out = json.dumps({"error": code}).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if "sse" in self.path:
            nev = 5
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(nev):
                ev = f'data: {{"i": {i}}}\n\n'.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
                self.wfile.flush()
                time.sleep(0.05)
            ev = b'data: {"usage": {"total_tokens": 7}}\n\ndata: [DONE]\n\n'
            self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        out = json.dumps({"echo": rec, "usage": {"total_tokens": 7}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = _handle


def start_upstream() -> int:
    port = free_port()
    srv = ThreadingHTTPServer(("127.0.0.1", port), Up)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return port


# ---------------------------------------------------------------- envoy config pieces
def extproc_filter(stage: str, mode: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            T: f"{API}.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": "extproc"},
                "initial_metadata": [{"key": "x-stage", "value": stage}],
            },
            "message_timeout": "5s",
            "processing_mode": mode,
            **extra,
        },
    }


ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {T: f"{API}.extensions.filters.http.router.v3.Router"},
}
CODEC = {
    "name": "envoy.filters.http.upstream_codec",
    "typed_config": {T: f"{API}.extensions.filters.http.upstream_codec.v3.UpstreamCodec"},
}


def upstream_cluster(name: str, port: int, http_filters: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {
        T: f"{API}.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http_protocol_options": {}},
    }
    if http_filters:
        opts["http_filters"] = [*http_filters, CODEC]
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}],
        },
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts},
    }


def extproc_cluster(sock_dir: str, n: int, lb: str = "ROUND_ROBIN") -> dict[str, Any]:
    return {
        "name": "extproc",
        "type": "STATIC",
        "lb_policy": lb,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                T: f"{API}.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": "extproc",
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": os.path.join(sock_dir, f"p{i}.sock")}}}} for i in range(n)]}
            ],
        },
    }


def bootstrap(listen_port: int, admin_port: int, http_filters: list[dict[str, Any]], routes: list[dict[str, Any]],
              clusters: list[dict[str, Any]], extra_static: dict[str, Any] | None = None) -> dict[str, Any]:
    hcm = {
        T: f"{API}.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "x",
        "http_filters": [*http_filters, ROUTER],
        "route_config": {"name": "r", "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": routes}]},
        "access_log": [{
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                T: f"{API}.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"text_format_source": {"inline_string": "ACCESS %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% route=%ROUTE_NAME% cluster=%UPSTREAM_CLUSTER% details=%RESPONSE_CODE_DETAILS% attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT%" + ("" if os.environ.get("NO_MD_LOG") else " md=%DYNAMIC_METADATA(sg)%") + "\n"}},
            },
        }],
    }
    b: dict[str, Any] = {
        "node": {"id": "r12", "cluster": "r12"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "l",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }],
            "clusters": clusters,
        },
    }
    if extra_static:
        for k, v in extra_static.items():
            b["static_resources"].setdefault(k, []).extend(v)
    return b


class Envoy:
    def __init__(self, cfg: dict[str, Any], workdir: str, admin_port: int, listen_port: int) -> None:
        self.path = os.path.join(workdir, "envoy.yaml")
        with open(self.path, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        self.admin_port = admin_port
        self.listen_port = listen_port
        self.log = open(os.path.join(workdir, "envoy.log"), "w")
        self.proc = subprocess.Popen(
            [ENVOY, "-c", self.path, "--disable-hot-restart", "--concurrency", "1", "-l", "warning",
             "--base-id", str(os.getpid() % 60000)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, deadline: float = 60.0) -> None:
        end = time.time() + deadline
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited {self.proc.returncode}: " + open(self.log.name).read()[-3000:])
            try:
                r = httpx.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("envoy not ready")

    def stats(self, flt: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.admin_port}/stats?filter={flt}", timeout=5).text

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def access(self) -> list[str]:
        return [l.rstrip() for l in open(self.log.name) if l.startswith("ACCESS")]

    def errors(self) -> list[str]:
        return [l.rstrip() for l in open(self.log.name) if not l.startswith("ACCESS")]


async def wait_for(cond: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    end = time.time() + deadline
    while time.time() < end:
        if cond():
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timeout waiting for {what}")


async def run(build: Callable[[str, int], dict[str, Any]], handler: Handler, client: Callable[[int], Any],
              nprocs: int = 1) -> tuple[Any, Envoy]:
    """build(sock_dir, upstream_port) -> bootstrap; client(listen_port) runs in a thread."""
    LOG.clear()
    UPSTREAM.clear()
    work = tempfile.mkdtemp(prefix="r12-", dir="/tmp")
    servers = await start_procs(work, nprocs, handler)
    up = start_upstream()
    cfg = build(work, up)
    listen = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    admin = cfg["admin"]["address"]["socket_address"]["port_value"]
    env = Envoy(cfg, work, admin, listen)
    try:
        await asyncio.to_thread(env.wait_ready)
        result = await asyncio.to_thread(client, listen)
        await asyncio.sleep(0.3)  # let trailing stream messages/logs land (counting only)
    finally:
        env.stop()
        for s in servers:
            await s.stop(0)
    return result, env


LIMIT = 600


def dump_log(title: str = "") -> None:
    if title:
        print(f"--- {title}")
    by: dict[int, list[dict[str, Any]]] = {}
    for e in LOG:
        by.setdefault(e["sid"], []).append(e)
    for sid, msgs in by.items():
        print(f"stream {sid} stage={msgs[0]['stage']} sock={msgs[0]['sock']} messages={len(msgs)}: "
              + ", ".join(m["kind"] + ("(eos)" if m.get("eos") else "") for m in msgs))
        for m in msgs:
            extra = {k: v for k, v in m.items() if k not in ("sid", "stage", "sock", "kind")}
            print("    ", m["kind"], json.dumps(extra)[:LIMIT])


def ports() -> tuple[int, int]:
    return free_port(), free_port()

"""``sidegate bench``: what sidegate adds, measured against a direct call and Envoy alone.

One run starts a fake OpenAI provider (its own process, uvloop), a bare Envoy
(listener → router → provider, no ext_proc) and ``sidegate run`` against the
same fake, then drives each with the same keep-alive HTTP/1.1 client: the
non-streaming chat request at each concurrency, and time to first token for
streams. Reported: p50/p99 latency, requests per second, the overhead over
direct and over Envoy alone, and the resident memory of the processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ..runner import find_envoy
from ..stages import stats_service
from ..stages.server import install_event_loop_policy
from .http1 import read_response

BODY = json.dumps(
    {
        "model": "bench",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. " * 10},
            {
                "role": "user",
                "content": "Summarise the following text. " + "lorem ipsum dolor " * 60,
            },
        ],
        "temperature": 0.2,
        "max_tokens": 64,
    }
).encode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer sk-bench\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _worker(
    port: int, request: bytes, count: int, out: list[float], ttft: list[float]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(request)
            response = await read_response(reader)
            status, first = response.status, response.first_chunk
            if status != 200:
                raise RuntimeError(f"status {status} from port {port}")
            out.append(time.perf_counter() - start)
            if first is not None:
                ttft.append(first - start)
    finally:
        writer.close()


@dataclass
class Result:
    target: str
    concurrency: int
    stream: bool
    requests: int
    p50_ms: float
    p99_ms: float
    rps: float
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    # CPU time the proxy's processes spent per request (user + system): far
    # steadier than latency on a shared box, so the number to optimise against.
    extproc_cpu_ms: float | None = None
    envoy_cpu_ms: float | None = None
    # ext_proc messages Envoy sent per request, counted by the ext_proc itself.
    messages_per_req: float | None = None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


@dataclass(frozen=True)
class Processes:
    """The processes a target runs on, whose CPU time is charged to it."""

    extproc: tuple[int, ...] = ()
    envoy: tuple[int, ...] = ()
    # The ext_proc's socket, to read its message counters from.
    socket: str | None = None


def _messages(socket: str | None) -> int:
    if socket is None:
        return 0
    counts = stats_service.read(socket)
    return sum(n for stage, per in counts.items() if stage != "streams" for n in per.values())


def _cpu_seconds(pids: Iterable[int]) -> float:
    ticks = 0
    for pid in pids:
        # Fields 14 and 15 (utime, stime), counted after the parenthesised name.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def _measure(
    target: str,
    port: int,
    path: str,
    body: bytes,
    concurrency: int,
    total: int,
    stream: bool,
    procs: Processes = Processes(),
) -> Result:
    request = _request(port, path, body)
    # Warm up connections and caches.
    await asyncio.gather(*(_worker(port, request, 20, [], []) for _ in range(concurrency)))
    latencies: list[float] = []
    ttft: list[float] = []
    per_worker = max(1, total // concurrency)
    # Read outside the CPU window: the call is the ext_proc's work, not the requests'.
    messages_before = _messages(procs.socket)
    cpu_before = _cpu_seconds(procs.extproc), _cpu_seconds(procs.envoy)
    start = time.perf_counter()
    await asyncio.gather(
        *(_worker(port, request, per_worker, latencies, ttft) for _ in range(concurrency))
    )
    elapsed = time.perf_counter() - start
    cpu_after = _cpu_seconds(procs.extproc), _cpu_seconds(procs.envoy)
    messages_after = _messages(procs.socket)
    result = Result(
        target,
        concurrency,
        stream,
        len(latencies),
        _pct(latencies, 0.5),
        _pct(latencies, 0.99),
        len(latencies) / elapsed,
    )
    if ttft:
        result.ttft_p50_ms, result.ttft_p99_ms = _pct(ttft, 0.5), _pct(ttft, 0.99)
    if latencies:
        if procs.extproc:
            result.extproc_cpu_ms = (cpu_after[0] - cpu_before[0]) * 1000 / len(latencies)
        if procs.envoy:
            result.envoy_cpu_ms = (cpu_after[1] - cpu_before[1]) * 1000 / len(latencies)
        if procs.socket is not None:
            result.messages_per_req = (messages_after - messages_before) / len(latencies)
    return result


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _children(pid: int) -> list[int]:
    kids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(p.name))
            except (OSError, ValueError, IndexError):
                continue
    return kids


_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def _envoy_alone(workdir: Path, port: int, upstream: int) -> subprocess.Popen[bytes]:
    bootstrap = {
        "static_resources": {
            "listeners": [
                {
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": _HCM,
                                        "stat_prefix": "bare",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {
                                                                "cluster": "fake",
                                                                "timeout": "0s",
                                                            },
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {"@type": _ROUTER},
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "fake",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "fake",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }
    path = workdir / "bare.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    return subprocess.Popen(
        [
            find_envoy(),
            "-c",
            str(path),
            "--disable-hot-restart",
            "--concurrency",
            "2",
            "--log-level",
            "error",
        ]
    )


def _start_gateway(
    workdir: Path, name: str, port: int, config: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], Path, str]:
    path = workdir / f"{name.strip('+').replace(' ', '-')}.yaml"
    socket = str(path.with_suffix(".sock"))
    path.write_text(
        yaml.safe_dump({**config, "listen": {"port": port}, "extproc": {"socket": socket}})
    )
    ready = path.with_suffix(".ready")
    proc = subprocess.Popen(
        [sys.executable, "-m", "extproc.cli", "run", "-c", str(path), "--ready-file", str(ready)],
        env={**os.environ, "SIDEGATE_BENCH_KEY": "sk-bench"},
        stderr=subprocess.DEVNULL,
    )
    return proc, ready, socket


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def _table(results: list[Result]) -> str:
    base = {(r.target, r.concurrency, r.stream): r for r in results}
    rows = [
        "| target | conc. | stream | p50 ms | p99 ms | req/s | +p50 vs direct | +p99 vs direct "
        "| +p50 vs Envoy | +p99 vs Envoy | TTFT p50 | TTFT p99 | ext_proc CPU ms/req "
        "| Envoy CPU ms/req | messages/req |",
        "|---|--:|:-:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        d = base.get(("direct", r.concurrency, r.stream))
        e = base.get(("envoy", r.concurrency, r.stream))

        def delta(a: float, b: Result | None, attr: str, target: str = r.target) -> str:
            return f"{a - getattr(b, attr):+.2f}" if b and target != b.target else ""

        ttft = f"{r.ttft_p50_ms:.2f} | {r.ttft_p99_ms:.2f}" if r.ttft_p50_ms is not None else " | "
        cpu = " | ".join(
            f"{v:.2f}" if v is not None else ""
            for v in (r.extproc_cpu_ms, r.envoy_cpu_ms, r.messages_per_req)
        )
        rows.append(
            f"| {r.target} | {r.concurrency} | {'y' if r.stream else ''} | {r.p50_ms:.2f} | "
            f"{r.p99_ms:.2f} | {r.rps:.0f} | {delta(r.p50_ms, d, 'p50_ms')} | "
            f"{delta(r.p99_ms, d, 'p99_ms')} | {delta(r.p50_ms, e, 'p50_ms')} | "
            f"{delta(r.p99_ms, e, 'p99_ms')} | {ttft} | {cpu} |"
        )
    return "\n".join(rows)


def main(args: argparse.Namespace) -> int:
    install_event_loop_policy()
    workdir = Path(tempfile.mkdtemp(prefix="sidegate-bench-"))
    fake_port, envoy_port, gw_port = _free_port(), _free_port(), _free_port()
    procs: list[subprocess.Popen[Any]] = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "extproc.cli",
                    "fake-provider",
                    "--api",
                    "openai",
                    "--port",
                    str(fake_port),
                    "--name",
                    "bench",
                ],
                stdout=subprocess.DEVNULL,
            )
        )
        procs.append(_envoy_alone(workdir, envoy_port, fake_port))
        sink_port = _free_port()
        if args.telemetry:
            # Traces (every request sampled) and metrics, exported over OTLP/gRPC
            # to a sink that keeps nothing: the row shows the gateway's cost.
            sink = [sys.executable, "-m", "extproc.devtools.otlp_sink", str(sink_port)]
            procs.append(subprocess.Popen(sink))
        base = {
            "providers": {
                "fake": {
                    "api": "openai",
                    "base_url": f"http://127.0.0.1:{fake_port}/v1",
                    "keys": [{"env": "SIDEGATE_BENCH_KEY"}],
                }
            },
            "models": {"bench": {"provider": "fake", "id": "gpt-4o-mini"}},
            "envoy": {"access_log": False, "concurrency": 2},
        }
        # Quotas that never deny: the cost measured is counting, not refusing.
        quotas = [
            {"name": "rpm", "per": ["user"], "window": "1m", "requests": 10**9},
            {"name": "tpm", "per": ["tenant", "model"], "window": "1m", "tokens": 10**12},
        ]
        gateways = [("sidegate", gw_port, base)]
        if args.quotas:
            gateways.append(("+quotas", _free_port(), {**base, "quotas": quotas}))
        if args.telemetry:
            sink_url = f"http://127.0.0.1:{sink_port}"
            telemetry = {"export": {"endpoint": sink_url, "protocol": "grpc"}}
            gateways.append(("+telemetry", _free_port(), {**base, "telemetry": telemetry}))
        if args.audit:
            # The durable audit log: each record written and fsynced (on this
            # machine's disk) before its response ends.
            audit = {"file": {"path": str(workdir / "audit" / "audit.jsonl")}}
            gateways.append(("+audit", _free_port(), {**base, "audit": audit}))
            if args.telemetry:
                # A log of its own: one process writes a log at a time (a lock).
                audit = {"file": {"path": str(workdir / "audit-telemetry" / "audit.jsonl")}}
                both = {**base, "telemetry": telemetry, "audit": audit}
                gateways.append(("+telemetry +audit", _free_port(), both))
        if args.redis_url:
            redis_state = {"redis": {"url": args.redis_url, "key_prefix": "sidegate-bench:"}}
            gateways.append(
                ("+quotas redis", _free_port(), {**base, "quotas": quotas, "state": redis_state})
            )
        running = []
        sockets = []
        for name, port, config in gateways:
            proc, ready, sock = _start_gateway(workdir, name, port, config)
            procs.append(proc)
            running.append((name, proc, ready))
            sockets.append(sock)
        for port in (fake_port, envoy_port, *([sink_port] if args.telemetry else [])):
            _wait_port(port)
        deadline = time.monotonic() + 60
        for name, proc, ready in running:
            while not ready.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start")
                time.sleep(0.05)
        gateway = running[0][1]

        targets = [
            ("direct", fake_port, Processes()),
            ("envoy", envoy_port, Processes(envoy=(procs[1].pid,))),
        ] + [
            (
                name,
                port,
                Processes(extproc=(proc.pid,), envoy=tuple(_children(proc.pid)), socket=sock),
            )
            for (name, port, _), (_, proc, _), sock in zip(gateways, running, sockets, strict=True)
        ]
        stream_body = BODY[:-1] + b', "stream": true}'

        async def run_all() -> list[Result]:
            out = []
            for c in args.concurrency:
                for name, port, target_procs in targets:
                    out.append(
                        await _measure(
                            name,
                            port,
                            "/v1/chat/completions",
                            BODY,
                            c,
                            args.requests,
                            False,
                            target_procs,
                        )
                    )
            for name, port, target_procs in targets:
                out.append(
                    await _measure(
                        name,
                        port,
                        "/v1/chat/completions",
                        stream_body,
                        1,
                        max(200, args.requests // 4),
                        True,
                        target_procs,
                    )
                )
            return out

        results = asyncio.run(run_all())
        envoy_child = _children(gateway.pid)
        memory = {
            "sidegate ext_proc (python) RSS MiB": round(_rss_mib(gateway.pid), 1),
            "sidegate envoy RSS MiB": round(sum(_rss_mib(p) for p in envoy_child), 1),
            "fake provider RSS MiB": round(_rss_mib(procs[0].pid), 1),
        }
        for name, proc, _ in running[1:]:
            what = "OpenTelemetry SDK loaded" if "+telemetry" in name else "tiktoken loaded"
            memory[f"{name} ext_proc (python, {what}) RSS MiB"] = round(
                _rss_mib(proc.pid), 1
            )
        print(_table(results))
        print()
        for k, v in memory.items():
            print(f"- {k}: {v}")
        print(
            f"\nrequest body {len(BODY)} bytes; {os.cpu_count()} CPUs shared by client, fake, "
            "Envoy and the ext_proc"
        )
        if args.json:
            Path(args.json).write_text(
                json.dumps({"results": [asdict(r) for r in results], "memory": memory}, indent=2)
            )
        return 0
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

"""``sidegate bench --soak N``: the ext_proc's resident memory over many requests.

Starts two fake providers (OpenAI and Anthropic wire formats) and
``sidegate run`` with two in-memory quotas (so prompts are counted with
tiktoken), drives N requests of a fixed mix over keep-alive connections, and
samples the ext_proc's RSS from ``/proc/<pid>/status`` every ``--soak-every``
requests, then once more after a short idle. The mix covers every path a
request takes: both client APIs, streamed and not, translation, failover on a
provider's 503, embeddings, and requests refused with a 400. Prompts differ
from request to request, so the token-count cache keeps turning over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..stages.server import install_event_loop_policy
from .http1 import read_response

WORDS = ("alpha", "beta", "gamma", "delta", "kappa", "lambda", "sigma", "omega", "quota", "token")
SYSTEM = "You are a helpful assistant. Answer briefly and cite sources. " * 6
IDLE_SECONDS = 5.0


@dataclass
class Sample:
    requests: int
    seconds: float
    rss_mib: float


@dataclass
class SoakResult:
    """What a soak measured; each sample is printed as it is taken."""

    requests: int
    rps: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    # RSS after the run and IDLE_SECONDS without requests.
    idle_rss_mib: float = 0.0
    # "<kind> <status>" -> count; each kind has the one status it must get (see _request).
    statuses: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0

    def sample(self, requests: int, seconds: float, pid: int) -> None:
        s = Sample(requests, seconds, rss_mib(pid))
        self.samples.append(s)
        print(f"| {s.requests} | {s.seconds:.0f} | {s.rss_mib:.1f} |", flush=True)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + f" #{rng.randrange(10**9)}"


def _request(rng: random.Random, port: int) -> tuple[str, int, bytes]:
    """One request of the mix: its kind, the status it must get, and its bytes."""
    roll = rng.randrange(20)
    headers = {"x-sidegate-user": f"user-{rng.randrange(50)}"}
    status = 200
    prompt = _text(rng, rng.randrange(5, 200))
    path = "/v1/chat/completions"
    if roll < 5:
        kind = "openai"
        body: dict[str, Any] = {
            "model": "gpt",
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt},
            ],
            "max_tokens": 64,
        }
        if roll >= 3:
            kind += "-stream"
            body.update(stream=True, stream_options={"include_usage": True})
    elif roll < 10:
        kind, path = "anthropic", "/anthropic/v1/messages"
        body = {
            "model": "claude",
            "max_tokens": 64,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": prompt}],
            "stream": roll >= 8,
        }
        headers["anthropic-version"] = "2023-06-01"
        kind += "-stream" if roll >= 8 else ""
    elif roll < 14:
        # OpenAI client, Anthropic provider first: translated both ways.
        kind = "translated"
        body = {
            "model": "fast",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 32,
            "stream": roll >= 12,
        }
        kind += "-stream" if roll >= 12 else ""
    elif roll < 16:
        # The first provider answers 503; Envoy retries on the next.
        kind = "failover"
        body = {"model": "fast", "messages": [{"role": "user", "content": prompt}]}
        headers["x-fake-fault-soak-an"] = "status=503"
    elif roll < 18:
        kind, path = "embeddings", "/v1/embeddings"
        body = {"model": "embed", "input": [_text(rng, 20), _text(rng, 30)]}
    else:
        kind, status = "invalid", 400
        body = {"model": "gpt", "messages": "not a list"} if roll == 18 else {"model": "nope"}
    raw = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer app-placeholder\r\ncontent-length: {len(raw)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "\r\n"
    )
    return kind, status, head.encode() + raw


async def drive(
    port: int, total: int, concurrency: int, every: int, pid: int, result: SoakResult
) -> None:
    sent = 0
    start = time.monotonic()
    statuses: Counter[str] = Counter()
    result.sample(0, 0.0, pid)

    async def worker(index: int) -> None:
        nonlocal sent
        rng = random.Random(index)
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while sent < total:
            sent += 1
            number = sent
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            kind, expected, request = _request(rng, port)
            conn[1].write(request)
            try:
                response = await read_response(conn[0])
                status, close = response.status, response.close
            except (asyncio.IncompleteReadError, ConnectionError):
                status, close = 0, True
            statuses[f"{kind} {status}"] += 1
            if status != expected:
                result.unexpected += 1
            if close:
                conn[1].close()
                conn = None
            if number % every == 0:
                result.sample(number, time.monotonic() - start, pid)
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    result.rps = total / (time.monotonic() - start)
    result.statuses = dict(sorted(statuses.items()))


def _config(openai_port: int, anthropic_port: int, port: int) -> dict[str, Any]:
    return {
        "listen": {"port": port},
        "providers": {
            "soak-oa": {
                "api": "openai",
                "base_url": f"http://127.0.0.1:{openai_port}/v1",
                "keys": [{"env": "SIDEGATE_SOAK_OA_KEY"}],
            },
            "soak-an": {
                "api": "anthropic",
                "base_url": f"http://127.0.0.1:{anthropic_port}",
                "keys": [{"env": "SIDEGATE_SOAK_AN_KEY"}],
            },
        },
        "models": {
            "gpt": {"provider": "soak-oa", "id": "gpt-4o-mini"},
            "claude": {"provider": "soak-an", "id": "claude-haiku-4-5"},
            "embed": {"provider": "soak-oa", "id": "text-embedding-3-small", "embeddings": True},
        },
        "routes": {"fast": ["claude", "gpt"]},
        # Quotas that never refuse: what is measured is counting, not denying.
        "quotas": [
            {"name": "rpm", "per": ["user"], "window": "1m", "requests": 10**9},
            {"name": "tpm", "per": ["user", "model"], "window": "1m", "tokens": 10**12},
        ],
        "envoy": {"access_log": False, "concurrency": 1},
    }


def soak(total: int, every: int, concurrency: int) -> SoakResult:
    from .bench import _free_port, _wait_port

    workdir = Path(tempfile.mkdtemp(prefix="sidegate-soak-"))
    oa, an, port = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "SIDEGATE_SOAK_OA_KEY": "sk-soak-oa", "SIDEGATE_SOAK_AN_KEY": "sk-soak-an"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for api, fake_port, name in (("openai", oa, "soak-oa"), ("anthropic", an, "soak-an")):
            procs.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "extproc.cli", "fake-provider", "--api", api),
                        *("--port", str(fake_port), "--name", name),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
        config = workdir / "soak.yaml"
        config.write_text(yaml.safe_dump(_config(oa, an, port)))
        ready = workdir / "ready"
        gateway = subprocess.Popen(
            [
                *(sys.executable, "-m", "extproc.cli", "run"),
                *("-c", str(config), "--ready-file", str(ready)),
            ],
            env=env,
            stderr=(workdir / "sidegate.log").open("wb"),
        )
        procs.append(gateway)
        for fake_port in (oa, an):
            _wait_port(fake_port)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if gateway.poll() is not None or time.monotonic() > deadline:
                log = (workdir / "sidegate.log").read_text()[-2000:]
                raise RuntimeError(f"sidegate did not start:\n{log}")
            time.sleep(0.05)
        result = SoakResult(requests=total)
        print("| requests | seconds | ext_proc RSS MiB |\n|--:|--:|--:|", flush=True)
        asyncio.run(drive(port, total, concurrency, every, gateway.pid, result))
        time.sleep(IDLE_SECONDS)
        result.idle_rss_mib = rss_mib(gateway.pid)
        return result
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def main(args: argparse.Namespace) -> int:
    install_event_loop_policy()
    concurrency = max(args.concurrency)
    result = soak(args.soak, args.soak_every, concurrency)
    print(f"| idle {IDLE_SECONDS:.0f} s | | {result.idle_rss_mib:.1f} |")
    print(f"\n{result.rps:.0f} requests/s at concurrency {concurrency}; statuses:")
    for key, count in result.statuses.items():
        print(f"- {key}: {count}")
    if result.unexpected:
        print(f"{result.unexpected} requests got another status than their kind's")
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=2))
    return 0

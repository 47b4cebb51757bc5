"""A local provider that speaks the real OpenAI or Anthropic wire format, faults on demand.

For tests, benchmarks and local work without keys. It answers
``POST /v1/chat/completions``, ``/v1/responses`` and ``/v1/embeddings`` (OpenAI) or
``POST /v1/messages`` and ``/v1/messages/count_tokens`` (Anthropic), streamed
or not, with exact SSE framing, and
``GET /v1/models`` (both), which checks the key like every other endpoint (what
``sidegate config check --probe`` calls). With a certificate and key it serves
HTTPS, as every real provider does, and records the SNI name each client sent.
As a model would, it calls the tool ``tool_choice`` names (else the first),
with arguments of the schema's types, answers tool results with text, and
answers a requested JSON schema (``response_format``, ``output_config``) with
JSON of it.

Faults come from a request header named for the fake, so that one request can
make the first provider fail and the fallback succeed::

    x-fake-fault-<name>: status=429,retry_after=1
    x-fake-fault-<name>: stall=5                  # no byte for 5 s
    x-fake-fault-<name>: reset_after=2            # RST after 2 SSE events (0: before headers)
    x-fake-fault-<name>: chunk_delay=0.2          # 200 ms between SSE events
    x-fake-fault-<name>: end_delay=1              # 1 s from the last SSE event to the body's end
    x-fake-fault-<name>: error_event=overloaded_error   # Anthropic SSE error mid-stream
    x-fake-fault-<name>: cache_read=100,cache_creation=20
    x-fake-fault-<name>: status=503,only_model=gpt-4o   # only requests for that model id
    x-fake-fault-<name>: big_event=1048576        # one content event (or JSON text) of 1 MiB more
    x-fake-fault-<name>: write_size=16384         # body written in pieces of this size
    x-fake-fault-<name>: echo_key=1               # the reply quotes its key, whole and masked
    x-fake-fault-<name>: account_headers=1        # set-cookie, openai-organization, ...
    x-fake-fault-<name>: reasoning=1              # OpenAI: reasoning_content, as vLLM/DeepSeek send
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import ssl
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import fake_answers, fake_responses

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Faults:
    status: int = 0
    retry_after: str | None = None
    stall: float = 0.0
    reset_after: int = -1
    chunk_delay: float = 0.0
    end_delay: float = 0.0
    error_event: str | None = None
    cache_read: int = 0
    cache_creation: int = 0
    only_model: str | None = None  # the fault applies to requests for this model id only
    big_event: int = 0
    write_size: int = 0
    echo_key: bool = False
    account_headers: bool = False
    reasoning: bool = False
    # The key this request came with, for echo_key (set by the server, not parsed).
    received_key: str = ""

    @classmethod
    def parse(cls, value: str) -> Faults:
        f = cls()
        for item in filter(None, (p.strip() for p in value.split(","))):
            key, _, v = item.partition("=")
            if key == "status":
                f.status = int(v)
            elif key == "retry_after":
                f.retry_after = v
            elif key == "stall":
                f.stall = float(v)
            elif key == "reset_after":
                f.reset_after = int(v)
            elif key == "chunk_delay":
                f.chunk_delay = float(v)
            elif key == "end_delay":
                f.end_delay = float(v)
            elif key == "error_event":
                f.error_event = v
            elif key == "only_model":
                f.only_model = v
            elif key in ("cache_read", "cache_creation", "big_event", "write_size"):
                setattr(f, key, int(v))
            elif key in ("echo_key", "account_headers", "reasoning"):
                setattr(f, key, v not in ("", "0", "false"))
        return f


def _last_user_text(messages: list[Any]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                texts = [
                    p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text"
                ]
                if texts:
                    return " ".join(texts)
                kinds = [p.get("type") for p in c if isinstance(p, dict)]
                return "[" + ",".join(str(k) for k in kinds) + "]"
    return ""


def _tool_result_text(messages: list[Any]) -> str | None:
    """The text of the tool results the conversation ends with (OpenAI or Anthropic), or None.

    A model that got its tool's answer replies with text instead of calling again.
    """
    last = messages[-1] if messages else None
    if not isinstance(last, dict):
        return None
    if last.get("role") == "tool":
        results: list[str] = []
        for m in reversed(messages):
            if not isinstance(m, dict) or m.get("role") != "tool":
                break
            results.insert(0, _text_of(m.get("content")))
        return " ".join(results)
    content = last.get("content")
    if last.get("role") == "user" and isinstance(content, list):
        results = [
            _text_of(b.get("content"))
            for b in content
            if isinstance(b, dict) and b.get("type") == "tool_result"
        ]
        said = any(isinstance(b, dict) and b.get("type") == "text" for b in content)
        # A user who wrote something besides the results is answered as usual.
        return " ".join(results) if results and not said else None
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _count_tokens(body: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's count_tokens answer: a token per word of the JSON, plus 7 (a marker)."""
    words = json.dumps([body.get("system"), body.get("messages"), body.get("tools")]).split()
    return {"input_tokens": len(words) + 7}


# What an OpenAI-compatible reasoning server returns beside the answer (reasoning=1).
REASONING = "The user greets me; I greet back."


# What real providers send about the account sidegate's key belongs to.
_ACCOUNT_HEADERS = {
    "set-cookie": "__cf_bm=fake-session; path=/; HttpOnly; Secure",
    "openai-organization": "org-fake-account",
    "openai-project": "proj_fake",
    "anthropic-organization-id": "fake-org-uuid",
    "x-request-id": "req_fake123",
    "x-ratelimit-remaining-requests": "99",
}


def _received_key(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    return auth[7:] if auth.startswith("Bearer ") else headers.get("x-api-key", "")


def _echo_headers(key: str) -> dict[str, str]:
    """Response headers of a provider (or a proxy before it) that echo the key it got."""
    return {"x-echo-authorization": f"Bearer {key}", "x-echo-masked": f"{key[:5]}...{key[-4:]}"}


def _faulty_text(text: str, f: Faults, headers: dict[str, str]) -> str:
    """The reply text with what ``big_event`` and ``echo_key`` add to it."""
    if f.echo_key:
        key = _received_key(headers)
        # The key whole, and masked the ways OpenAI's 401 messages show it.
        text += f" key={key} masked={key[:8]}{'*' * 24}{key[-4:]} short={key[:5]}...{key[-4:]}"
    if f.big_event:
        text += " " + "x" * f.big_event  # one word: one stream event
    return text


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + (" " if i < len(parts) - 1 else "") for i, p in enumerate(parts)]


@dataclass
class FakeProvider:
    api: str  # "openai" | "anthropic"
    name: str = "fake"
    key: str | None = None
    # Accepted keys, one per line, re-read on every request (key rotation tests).
    key_file: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    record: bool = True
    # Requests being answered now, and the most at once (load tests bound retries with it).
    in_flight: int = 0
    max_in_flight: int = 0
    # HTTPS: PEM files of the serving certificate (chain) and its key.
    tls_cert: str | None = None
    tls_key: str | None = None
    # The host name in base_url (a certificate names hosts, not 127.0.0.1).
    server_name: str | None = None
    sni_names: list[str | None] = field(default_factory=list)
    # Responses stored for previous_response_id (OpenAI's /v1/responses), bounded.
    stored_responses: fake_responses.ResponseStore = field(
        default_factory=fake_responses.ResponseStore
    )
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None

    def _accepted_keys(self) -> set[str] | None:
        if self.key_file is not None:
            try:
                with open(self.key_file, encoding="utf-8") as f:
                    return {line.strip() for line in f if line.strip()}
            except OSError:
                return set()  # no readable key file: nothing is accepted
        return None if self.key is None else {self.key}

    # -- lifecycle -------------------------------------------------------------

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.tls_cert is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.tls_cert, self.tls_key)
        # HTTP/1.1 only: say so in ALPN so a client offering h2 falls back.
        ctx.set_alpn_protocols(["http/1.1"])

        def remember_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            if len(self.sni_names) < 1000:
                self.sni_names.append(name)

        ctx.sni_callback = remember_sni
        return ctx

    async def start_async(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, self.host, self.port, backlog=1024, ssl=self._tls_context()
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> FakeProvider:
        """Serve from a background thread with its own event loop."""
        ready = threading.Event()

        def main() -> None:
            self._loop = loop = asyncio.new_event_loop()
            loop.run_until_complete(self.start_async())
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=main, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shutdown() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(5)

    @property
    def base_url(self) -> str:
        suffix = "/v1" if self.api == "openai" else ""
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.server_name or self.host}:{self.port}{suffix}"

    # -- HTTP/1.1 --------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += chunk[:-2]
                else:
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self.record:
                    self.requests.append(Recorded(method, path, headers, body))
                keep = await self._respond_counted(writer, method, path, headers, body)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, ssl.SSLError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def _respond_counted(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> bool:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._respond(writer, method, path, headers, body)
        finally:
            self.in_flight -= 1

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        extra: dict[str, str] | None = None,
        content_type: str = "application/json",
        f: Faults | None = None,
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            f"content-type: {content_type}",
            f"content-length: {len(body)}",
        ]
        extra = dict(extra or {})
        if f is not None and f.account_headers:
            extra.update(_ACCOUNT_HEADERS)
        if f is not None and f.echo_key:
            extra.update(_echo_headers(f.received_key))
        head += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        step = f.write_size if f is not None and f.write_size else len(body) or 1
        for i in range(0, len(body), step):
            writer.write(body[i : i + step])
            await writer.drain()
        await writer.drain()

    def _auth_message(self, headers: dict[str, str]) -> str:
        key = _received_key(headers)
        if self.api == "openai" and len(key) > 12:
            # OpenAI's wording, the key masked as it masks it.
            return (
                f"Incorrect API key provided: {key[:8]}{'*' * (len(key) - 12)}{key[-4:]}. "
                "You can find your API key at https://platform.openai.com/account/api-keys."
            )
        return "invalid x-api-key or authorization"

    def _error(self, status: int, message: str) -> bytes:
        if self.api == "anthropic":
            kind = {
                400: "invalid_request_error",
                401: "authentication_error",
                404: "not_found_error",
                429: "rate_limit_error",
                529: "overloaded_error",
            }.get(status, "api_error")
            return json.dumps(
                {"type": "error", "error": {"type": kind, "message": message}}
            ).encode()
        kind = {
            400: "invalid_request_error",
            401: "invalid_request_error",
            429: "rate_limit_error",
        }.get(status, "server_error")
        return json.dumps(
            {"error": {"message": message, "type": kind, "param": None, "code": None}}
        ).encode()

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
    ) -> bool:
        faults = Faults.parse(headers.get(f"x-fake-fault-{self.name}", ""))
        if faults.only_model is not None and faults.only_model.encode() not in raw:
            faults = Faults()
        if faults.echo_key:
            faults.received_key = _received_key(headers)
        if faults.stall:
            await asyncio.sleep(faults.stall)
        if faults.reset_after == 0:
            self._reset(writer)
            return False
        accepted = self._accepted_keys()
        if accepted is not None:
            if self.api == "openai":
                auth = headers.get("authorization", "")
                ok = auth.startswith("Bearer ") and auth[7:] in accepted
            else:
                ok = headers.get("x-api-key") in accepted and "anthropic-version" in headers
            if not ok:
                message = self._auth_message(headers)
                await self._send(writer, 401, self._error(401, message), f=faults)
                return True
        if faults.status:
            extra = {"retry-after": faults.retry_after} if faults.retry_after else {}
            await self._send(
                writer,
                faults.status,
                self._error(
                    faults.status, f"fault injected by {self.name}" + " x" * (faults.big_event // 2)
                ),
                extra,
            )
            return True
        if method == "GET" and path.split("?")[0] == "/v1/models":
            await self._send(writer, 200, json.dumps(self._models()).encode())
            return True
        try:
            body = json.loads(raw)
        except ValueError:
            await self._send(writer, 400, self._error(400, "body is not JSON"))
            return True
        if self.api == "openai" and method == "POST" and path == "/v1/chat/completions":
            return await self._openai_chat(writer, body, faults, headers)
        if self.api == "openai" and method == "POST" and path == "/v1/responses":
            return await self._openai_responses(writer, body, faults, headers)
        if self.api == "openai" and method == "POST" and path == "/v1/embeddings":
            inputs = body.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            vector = fake_answers.embedding([0.1, -0.2, 0.3], body.get("encoding_format"))
            data = [
                {"object": "embedding", "index": i, "embedding": vector}
                for i in range(len(items))
            ]
            out = {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": 3 * len(items), "total_tokens": 3 * len(items)},
            }
            await self._send(writer, 200, json.dumps(out).encode())
            return True
        if self.api == "anthropic" and method == "POST" and path == "/v1/messages/count_tokens":
            await self._send(writer, 200, json.dumps(_count_tokens(body)).encode())
            return True
        if self.api == "anthropic" and method == "POST" and path == "/v1/messages":
            if not isinstance(body.get("max_tokens"), int):
                await self._send(writer, 400, self._error(400, "max_tokens: Field required"))
                return True
            return await self._anthropic(writer, body, faults, headers)
        await self._send(writer, 404, self._error(404, f"no route {method} {path}"))
        return True

    def _models(self) -> dict[str, Any]:
        if self.api == "openai":
            ids = ("gpt-4o-mini", "text-embedding-3-small")
            data = [{"id": i, "object": "model", "created": 0, "owned_by": self.name} for i in ids]
            return {"object": "list", "data": data}
        ids = ("claude-haiku-4-5", "claude-sonnet-4-5")
        models = [
            {"type": "model", "id": i, "display_name": i, "created_at": "2025-10-01T00:00:00Z"}
            for i in ids
        ]
        return {"data": models, "has_more": False, "first_id": ids[0], "last_id": ids[-1]}

    # -- OpenAI ----------------------------------------------------------------

    def _reply(self, body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
        messages = body.get("messages") or []
        text = fake_answers.structured_text(body, self.api)
        if text is None:
            results = _tool_result_text(messages)
            if results is not None:
                return f"Hello from {self.name}! The tool said: {results}", None
            text = f"Hello from {self.name}! You said: {_last_user_text(messages)}"
        tool = fake_answers.chosen_tool(body, self.api)
        if tool is not None:
            return text, {"name": tool[0], "args": fake_answers.tool_input(body, tool[1])}
        return text, None

    async def _openai_chat(
        self, writer: asyncio.StreamWriter, body: dict[str, Any], f: Faults, headers: dict[str, str]
    ) -> bool:
        text, call = self._reply(body)
        text = _faulty_text(text, f, headers)
        model = body.get("model")
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
        completion = len(text.split())
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": f.cache_read},
        }
        cid, created = "chatcmpl-fake123", int(time.time())
        if not body.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None if call else text,
                "refusal": None,
            }
            if f.reasoning:
                message["reasoning_content"] = REASONING
            if call:
                message["tool_calls"] = [
                    {
                        "id": "call_fake1",
                        "type": "function",
                        "function": {"name": call["name"], "arguments": json.dumps(call["args"])},
                    }
                ]
            out = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if call else "stop",
                    }
                ],
                "usage": usage,
                "system_fingerprint": "fp_fake",
            }
            await self._send(writer, 200, json.dumps(out).encode(), f=f)
            return True
        with_usage = (body.get("stream_options") or {}).get("include_usage") is True

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if with_usage:
                c["usage"] = None
            return b"data: " + json.dumps(c).encode() + b"\n\n"

        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        if f.reasoning:
            events += [chunk({"reasoning_content": w}) for w in _words(REASONING)]
        if call:
            args = json.dumps(call["args"])
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_fake1",
                                "type": "function",
                                "function": {"name": call["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            half = len(args) // 2
            for part in (args[:half], args[half:]):
                events.append(
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                )
            events.append(chunk({}, "tool_calls"))
        else:
            events += [chunk({"content": w}) for w in _words(text)]
            events.append(chunk({}, "stop"))
        if with_usage:
            events.append(
                b"data: "
                + json.dumps(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "system_fingerprint": "fp_fake",
                        "choices": [],
                        "usage": usage,
                    }
                ).encode()
                + b"\n\n"
            )
        events.append(b"data: [DONE]\n\n")
        return await self._stream(writer, events, f)

    async def _openai_responses(
        self, writer: asyncio.StreamWriter, body: dict[str, Any], f: Faults, headers: dict[str, str]
    ) -> bool:
        """``POST /v1/responses`` (``fake_responses``), stored responses included."""
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            stored = self.stored_responses.get(str(previous))
            if stored is None:
                error = {
                    "message": f"Previous response with id '{previous}' not found.",
                    "type": "invalid_request_error",
                    "param": "previous_response_id",
                    "code": "previous_response_not_found",
                }
                await self._send(writer, 404, json.dumps({"error": error}).encode(), f=f)
                return True
            history = list(stored)
        history += fake_responses.input_items(body)
        text, call = fake_responses.plan_output(self.name, body, history)
        if text is not None:
            text = _faulty_text(text, f, headers)
        suffix = "fake" + secrets.token_hex(8)
        output = fake_responses.output_items(suffix, text, call)
        prompt = sum(len(json.dumps(i).split()) for i in history)
        completion = len((text or json.dumps(call)).split())
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": f.cache_read, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }
        response_id = f"resp_{suffix}"
        final = fake_responses.response(body, response_id, output, "completed", usage)
        if body.get("store") is not False:
            self.stored_responses.put(response_id, history + output)
        if not body.get("stream"):
            await self._send(writer, 200, json.dumps(final).encode(), f=f)
            return True
        events = [
            fake_responses.sse(kind, data, n)
            for n, (kind, data) in enumerate(fake_responses.events(body, final))
        ]
        return await self._stream(writer, events, f)

    # -- Anthropic -------------------------------------------------------------

    async def _anthropic(
        self, writer: asyncio.StreamWriter, body: dict[str, Any], f: Faults, headers: dict[str, str]
    ) -> bool:
        text, call = self._reply(body)
        text = _faulty_text(text, f, headers)
        model = body.get("model")
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages") or [])
        out_tokens = len(text.split())
        stop_reason = "tool_use" if call else "end_turn"
        # A forced tool (tool_choice any or tool) comes with no text before it.
        forced = call is not None and (body.get("tool_choice") or {}).get("type") in ("any", "tool")
        content: list[dict[str, Any]] = [] if forced else [{"type": "text", "text": text}]
        if call:
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_fake1",
                    "name": call["name"],
                    "input": call["args"],
                }
            )
        usage = {
            "input_tokens": prompt,
            "cache_creation_input_tokens": f.cache_creation,
            "cache_read_input_tokens": f.cache_read,
            "output_tokens": out_tokens,
        }
        mid = "msg_fake123"
        if not body.get("stream"):
            out = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": usage,
            }
            await self._send(writer, 200, json.dumps(out).encode(), f=f)
            return True

        def ev(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        start_usage = dict(usage, output_tokens=1)
        events = [
            ev(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": mid,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": start_usage,
                    },
                },
            ),
            ev(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ev("ping", {"type": "ping"}),
        ]
        text_events = [
            ev(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": w},
                },
            )
            for w in _words(text)
        ]
        text_events.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
        if forced:
            del events[1]  # the text block's start
        else:
            events += text_events
        tool_index = 0 if forced else 1
        if call:
            args = json.dumps(call["args"])
            half = len(args) // 2
            events.append(
                ev(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": tool_index,
                        "content_block": {
                            "type": "tool_use",
                            "id": "toolu_fake1",
                            "name": call["name"],
                            "input": {},
                        },
                    },
                )
            )
            for part in (args[:half], args[half:]):
                events.append(
                    ev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": tool_index,
                            "delta": {"type": "input_json_delta", "partial_json": part},
                        },
                    )
                )
            events.append(
                ev("content_block_stop", {"type": "content_block_stop", "index": tool_index})
            )
        if f.error_event:
            events.insert(
                3,
                ev(
                    "error",
                    {"type": "error", "error": {"type": f.error_event, "message": "Overloaded"}},
                ),
            )
            del events[4:]
        else:
            events.append(
                ev(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                        "usage": {"output_tokens": out_tokens},
                    },
                )
            )
            events.append(ev("message_stop", {"type": "message_stop"}))
        return await self._stream(writer, events, f)

    # -- SSE -------------------------------------------------------------------

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Linger 0: close() sends RST, as a crashed or cut-off provider would.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _stream(self, writer: asyncio.StreamWriter, events: list[bytes], f: Faults) -> bool:
        extra = {**(_ACCOUNT_HEADERS if f.account_headers else {})}
        if f.echo_key:
            extra.update(_echo_headers(f.received_key))
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in extra.items()).encode()
            + b"\r\n"
        )
        for i, event in enumerate(events):
            if i == f.reset_after:
                await writer.drain()
                self._reset(writer)
                return False
            if f.chunk_delay and i:
                await asyncio.sleep(f.chunk_delay)
            await self._chunk(writer, event, f.write_size)
        if f.end_delay:
            await asyncio.sleep(f.end_delay)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


    @staticmethod
    async def _chunk(writer: asyncio.StreamWriter, data: bytes, size: int) -> None:
        """``data`` as HTTP/1.1 chunks of at most ``size`` bytes (0: one chunk), each drained."""
        step = size or len(data)
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()


def serve_forever(
    *,
    api: str,
    host: str,
    port: int,
    name: str,
    key: str | None,
    key_file: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> None:
    from ..stages.server import install_event_loop_policy

    install_event_loop_policy()

    async def main() -> None:
        fake = FakeProvider(
            api=api,
            name=name,
            key=key,
            key_file=key_file,
            host=host,
            port=port,
            record=False,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        await fake.start_async()
        # One write per line: two fakes started together must not interleave.
        sys.stdout.write(f"fake {api} provider {name!r} on {fake.base_url}\n")
        sys.stdout.flush()
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())

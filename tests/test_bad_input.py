"""Bad input: a clear 4xx in the caller's format, naming the problem; no provider is called."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from extproc.devtools.fake_provider import FakeProvider
from tests.harness import GatewayProcess

CHAT = "/v1/chat/completions"
MESSAGES = "/anthropic/v1/messages"


def _chat(extra: bytes) -> bytes:
    return b'{"model":"fast","messages":[{"role":"user","content":"x"}],' + extra + b"}"


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "needle"),
    [
        (CHAT, {"content": b'{"model": "fast", '}, 400, "not valid JSON"),
        (CHAT, {"content": b"[1,2]"}, 400, "must be a JSON object"),
        (CHAT, {"json": {"messages": [{"role": "user", "content": "x"}]}}, 400, "'model'"),
        (CHAT, {"json": {"model": "fast"}}, 400, "'messages'"),
        (
            CHAT,
            {"json": {"model": "gpt-5-ultra", "messages": [{"role": "user", "content": "x"}]}},
            404,
            "gpt-5-ultra",
        ),
        (
            CHAT,
            {
                "json": {
                    "model": "fast",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": "yes",
                }
            },
            400,
            "'stream'",
        ),
        (
            CHAT,
            {
                "content": b"model=fast",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
            415,
            "application/json",
        ),
        ("/v1/embeddings", {"json": {"model": "embed"}}, 400, "'input'"),
        ("/v1/embeddings", {"json": {"model": "fast", "input": "x"}}, 400, "cannot serve"),
        ("/v1/completions", {"json": {"model": "fast", "prompt": "x"}}, 404, "/v1/completions"),
        (
            MESSAGES,
            {
                "json": {
                    "model": "claude",
                    "max_tokens": 0,
                    "messages": [{"role": "user", "content": "x"}],
                }
            },
            400,
            "'max_tokens'",
        ),
        (MESSAGES, {"content": b"nope"}, 400, "not valid JSON"),
        # Hostile bodies: each would otherwise crash a stage (an empty 500) or
        # reach a provider that reads it differently from sidegate.
        (CHAT, {"content": b'{"model":"fast","messages":' + b"[" * 100_000}, 400, "levels deep"),
        (MESSAGES, {"content": b'{"a":' * 100_000 + b"1" + b"}" * 100_000}, 400, "limit is 64"),
        (
            CHAT,
            {
                "content": b'{"model":"gpt-EXPENSIVE","model":"fast",'
                b'"messages":[{"role":"user","content":"x"}]}'
            },
            400,
            "key 'model' appears twice",
        ),
        (
            MESSAGES,
            {
                "content": b'{"model":"claude","max_tokens":5,"messages":'
                b'[{"role":"user","content":"x","content":"y"}]}'
            },
            400,
            "key 'content' appears twice",
        ),
        (CHAT, {"content": _chat(b'"temperature":NaN')}, 400, "NaN is not a JSON number"),
        (CHAT, {"content": _chat(b'"temperature":1e999')}, 400, "'1e999' is out of range"),
        (CHAT, {"content": _chat(b'"seed":' + b"9" * 5000)}, 400, "more than 4300 digits"),
        (CHAT, {"content": b"null"}, 400, "must be a JSON object"),
        (CHAT, {"content": b'"fast"'}, 400, "must be a JSON object"),
        (CHAT, {"content": b'{"model":"fast","messages":[]}\xff'}, 400, "not valid UTF-8"),
        (
            CHAT,
            {"json": {"model": "fast", "messages": [{"role": "user", "content": 5}]}},
            400,
            "'messages[0].content' must be a string or a list",
        ),
        (
            MESSAGES,
            {"json": {"model": "claude", "max_tokens": 5, "messages": [{"role": "user"}]}},
            400,
            "'messages[0].content' must be a string or a list",
        ),
        (
            CHAT,
            {"json": {"model": "fast", "messages": [{"role": "user", "content": ["x"]}]}},
            400,
            "'messages[0].content[0]' must be an object with a string",
        ),
        (CHAT, {"json": {"model": ["fast"], "messages": [{"role": "user"}]}}, 400, "'model'"),
    ],
)
def test_bad_requests(
    gateway: GatewayProcess,
    fakes: dict[str, FakeProvider],
    path: str,
    kwargs: dict[str, object],
    status: int,
    needle: str,
) -> None:
    headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
    if "content" in kwargs and "content-type" not in headers:
        headers["content-type"] = "application/json"
    r = httpx.post(gateway.base + path, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    body = r.json()
    if path.startswith("/anthropic/"):
        assert body["type"] == "error" and needle in body["error"]["message"]
    else:
        assert needle in body["error"]["message"] and body["error"]["type"]
    assert not any(f.requests for f in fakes.values())


def test_body_over_the_limit(fakes: dict[str, FakeProvider]) -> None:
    from tests.conftest import gateway_doc

    doc = gateway_doc(fakes)
    doc["limits"] = {"max_request_body_bytes": 4096}
    gw = GatewayProcess(doc).start()
    try:
        big = {"model": "fast", "messages": [{"role": "user", "content": "x" * 5000}]}
        r = httpx.post(f"{gw.base}{CHAT}", json=big, timeout=10)
        assert r.status_code == 413 and "4096" in r.json()["error"]["message"]
        r = httpx.post(f"{gw.base}{MESSAGES}", json=dict(big, max_tokens=5), timeout=10)
        assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
        # Chunked, so no content-length to refuse it early: counted as it arrives.
        raw = json.dumps(big).encode()
        r = httpx.post(
            f"{gw.base}{CHAT}",
            content=iter([raw[:3000], raw[3000:]]),
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 413 and "4096" in r.json()["error"]["message"]
        assert not any(f.requests for f in fakes.values())
    finally:
        gw.stop()


def test_wrong_method(gateway: GatewayProcess) -> None:
    r = httpx.get(gateway.base + CHAT)
    assert r.status_code == 405 and "POST" in r.json()["error"]["message"]


def test_no_key_leaks_into_errors_or_logs(gateway: GatewayProcess) -> None:
    from tests.conftest import KEYS

    r = httpx.post(
        gateway.base + CHAT,
        json={"model": "smart", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-fake-fault-an": "status=401", "x-fake-fault-oa": "status=401"},
    )
    assert r.status_code == 401
    for key in KEYS.values():
        assert key not in r.text
        assert key not in gateway.log.read_text()


def _post(gateway: GatewayProcess, path: str, raw: bytes, **headers: str) -> httpx.Response:
    headers.setdefault("content-type", "application/json")
    return httpx.post(gateway.base + path, content=raw, headers=headers, timeout=10)


@pytest.mark.parametrize(
    ("path", "raw", "param"),
    [
        # OpenAI client, Anthropic provider first: the translation re-encodes
        # the text, where a lone surrogate raised UnicodeEncodeError (a 500).
        (
            CHAT,
            b'{"model":"smart","messages":[{"role":"user","content":"a\\ud800b"}]}',
            "messages[0].content",
        ),
        # OpenAI to OpenAI passes the bytes: refused all the same.
        (
            CHAT,
            b'{"model":"fast","messages":[{"role":"user","content":"\\udfff"}]}',
            "messages[0].content",
        ),
        (
            MESSAGES,
            b'{"model":"claude","max_tokens":5,'
            b'"messages":[{"role":"user","content":[{"type":"text","text":"\\uDC00"}]}]}',
            "messages[0].content[0].text",
        ),
        # JSON inside a string (tool call arguments) is checked like the body.
        (
            CHAT,
            b'{"model":"smart","messages":[{"role":"assistant","tool_calls":[{"id":"c",'
            b'"type":"function","function":{"name":"f","arguments":"{\\"q\\":\\"\\\\ud800\\"}"}}]},'
            b'{"role":"tool","tool_call_id":"c","content":"x"}]}',
            "messages[0].tool_calls[0].function.arguments.q",
        ),
    ],
)
def test_lone_surrogates_are_refused(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider], path: str, raw: bytes, param: str
) -> None:
    r = _post(gateway, path, raw)
    assert r.status_code == 400, r.text
    if path == MESSAGES:
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error"
    else:
        err = r.json()["error"]
        assert err["param"] == param
    assert param in err["message"] and "surrogate" in err["message"]
    assert not any(f.requests for f in fakes.values())


def test_paired_surrogates_are_one_character(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    raw = b'{"model":"smart","messages":[{"role":"user","content":"hi \\ud83d\\ude00"}]}'
    r = _post(gateway, CHAT, raw)
    assert r.status_code == 200, r.text
    sent = fakes["an"].requests[-1].json()
    assert sent["messages"][0]["content"][0]["text"] == "hi \U0001f600"


def test_deep_tool_call_arguments_are_refused(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    args = "[" * 100_000 + "]" * 100_000
    body = {
        "model": "smart",
        "messages": [
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": args}}
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "x"},
        ],
    }
    r = httpx.post(gateway.base + CHAT, json=body, timeout=10)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert "levels deep" in err["message"]
    assert err["param"] == "messages[0].tool_calls[0].function.arguments"
    assert not any(f.requests for f in fakes.values())


def test_echoed_input_is_capped(gateway: GatewayProcess, fakes: dict[str, FakeProvider]) -> None:
    model = "m" * 100_000
    r = httpx.post(
        gateway.base + CHAT,
        json={"model": model, "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    assert "m" * 100 in message and "(100000 characters)" in message
    assert len(r.content) < 2000, len(r.content)

    r = httpx.post(
        gateway.base + MESSAGES,
        json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )
    assert r.status_code == 404 and len(r.content) < 2000
    assert "(100000 characters)" in r.json()["error"]["message"]

    path = "/v1/" + "p" * 30_000
    r = httpx.get(gateway.base + path, timeout=10)
    assert r.status_code == 404 and len(r.content) < 2000
    assert "(30004 characters)" in r.json()["error"]["message"]

    r = httpx.get(gateway.base + "/v1/models/" + "q" * 30_000, timeout=10)
    assert r.status_code == 404 and len(r.content) < 2000

    r = _post(gateway, CHAT, b"{}", **{"content-type": "text/" + "z" * 30_000})
    assert r.status_code == 415 and len(r.content) < 2000
    assert not any(f.requests for f in fakes.values())


def test_schema_type_lists_are_counted(fakes: dict[str, FakeProvider]) -> None:
    """A JSON schema's "type" may be a list: the token estimator once crashed on it (a 500)."""
    from tests.conftest import gateway_doc

    doc = gateway_doc(fakes)
    doc["quotas"] = [{"name": "tokens", "window": "1m", "tokens": 1_000_000}]
    gw = GatewayProcess(doc).start()
    try:
        tool = {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": ["string", "null"]}},
                },
            },
        }
        for model in ("fast", "smart"):
            r = httpx.post(
                f"{gw.base}{CHAT}",
                json={"model": model, "messages": [{"role": "user", "content": "x"}], "tools": [tool]},
                timeout=10,
            )
            assert r.status_code == 200, r.text
    finally:
        gw.stop()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        # Sent as written (httpx would resolve the dot segments itself).
        ("POST", "/v1/chat/completions/../embeddings", 404),
        ("POST", "/anthropic/v1/../../v1/chat/completions", 404),
        ("POST", "/v1/./chat/completions", 404),
        ("POST", "/v1//chat/completions", 404),
        ("POST", "/v1/chat%2Fcompletions", 404),
        ("PUT", CHAT, 405),
        ("DELETE", "/v1/models", 405),
        ("OPTIONS", MESSAGES, 405),
        ("PATCH", CHAT, 405),
    ],
)
def test_odd_paths_and_methods(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider], method: str, path: str, status: int
) -> None:
    body = b'{"model":"fast","max_tokens":5,"messages":[{"role":"user","content":"x"}]}'
    with socket.create_connection(("127.0.0.1", gateway.config.listen.port), timeout=10) as s:
        s.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    head, _, payload = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status), out[:300]
    # Chunked or not, the error object names the method.
    assert b'"error"' in payload and method.encode() in payload
    assert not any(f.requests for f in fakes.values())


def test_query_string_never_reaches_a_provider(
    gateway: GatewayProcess, fakes: dict[str, FakeProvider]
) -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(gateway.base + CHAT + "?api-version=1&x=%0d%0a", json=body, timeout=10)
    assert r.status_code == 200, r.text
    assert fakes["oa"].requests[0].path == "/v1/chat/completions"


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b'{"a":"' + b"[" * 100 + b'"}', None),  # brackets in a string are text
        (b'{"a":"\\"' + b"[" * 100 + b'"}', None),  # after an escaped quote, still text
        (b'{"a":"\\\\","b":' + b"[" * 70 + b"]" * 70 + b"}", 71),  # \\ ends no string
        (b'{"a":"\\u005b' + b"{" * 100 + b'"}', None),
        (b"[" * 65 + b"]" * 65, 65),
        (b"[" * 64 + b"]" * 64, None),
    ],
)
def test_depth_scan(raw: bytes, depth: int | None) -> None:
    from extproc.rawjson import depth_over

    assert depth_over(raw, 64) == depth

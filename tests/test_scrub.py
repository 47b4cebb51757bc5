"""Provider keys and account headers never reach the app, streamed or not, on every route."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import httpx
import openai
import pytest

from extproc.devtools.fake_provider import FakeProvider
from extproc.scrub import ACCOUNT_HEADERS, Scrubber
from tests.conftest import KEYS, gateway_doc
from tests.harness import GatewayProcess, env_keys

OA_KEY = KEYS["SG_TEST_OA_KEY"]
AN_KEY = KEYS["SG_TEST_AN_KEY"]
# A key the fake OpenAI provider refuses: its 401 names it masked, as OpenAI's does.
WRONG_KEY = "sk-proj-Wr0ngKeyForTheScrubTest9876"
# The key of a provider whose error page quotes the request's authorization
# header 282 characters in: where sidegate cuts a quoted non-JSON error short.
PAGE_KEY = "sk-proj-ErrorPageEchoKey0123456789abcd"
# The fake writes 7 bytes at a time: every key straddles chunk boundaries.
ECHO = "echo_key=1,account_headers=1,write_size=7"


# -- the scrubber ---------------------------------------------------------------


def test_whole_and_masked_keys_are_overwritten_in_place() -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz0123WXYZ"
    s = Scrubber([key, "sk-other-key-0000000000"])
    text = (
        f'{{"a":"{key}","b":"Incorrect API key provided: sk-proj-{"*" * 30}WXYZ.",'
        f'"c":"sk-abc1...WXYZ","d":"sk-ab\u2026WXYZ","e":"sk-other-key-0000000000"}}'
    ).encode()
    out = s.scrub(text)
    assert len(out) == len(text)  # a passed-through content-length stays right
    for visible in (key.encode(), b"WXYZ", b"sk-proj-", b"sk-abc1", b"sk-other"):
        assert visible not in out, out
    assert out.startswith(b'{"a":"') and b"Incorrect API key provided: " in out


@pytest.mark.parametrize("split", range(1, 60))
def test_a_key_split_across_chunks_is_still_overwritten(split: int) -> None:
    key = "sk-test-oa-secret-1234"
    data = f"data: {{\"k\":\"{key}\",\"m\":\"sk-test-{'*' * 12}1234\"}}\n\n".encode()
    s = Scrubber([key])
    out = s.feed(data[:split]) + s.feed(data[split:]) + s.flush()
    assert len(out) == len(data) and key.encode() not in out and b"1234" not in out


def test_an_event_end_is_never_held_back() -> None:
    s = Scrubber(["sk-test-oa-secret-1234"])
    assert s.feed(b"data: {}\n\n") == b"data: {}\n\n"
    assert s.feed(b'{"ok":true}') == b'{"ok":true}'
    assert s.feed(b"tail sk-te") == b"tail "  # maybe a key's start: held
    assert s.flush() == b"sk-te"


def test_short_values_are_not_treated_as_keys() -> None:
    assert Scrubber(["abc"]).scrub(b"abc abc") == b"abc abc"


# -- end to end -----------------------------------------------------------------


@pytest.fixture(scope="module")
def scrub_gateway(fakes: dict[str, FakeProvider]) -> Iterator[GatewayProcess]:
    env_keys(SG_TEST_WRONG_KEY=WRONG_KEY)
    doc = gateway_doc(fakes)
    doc["providers"]["openai-wrong"] = {
        "api": "openai",
        "base_url": fakes["oa"].base_url,
        "keys": [{"env": "SG_TEST_WRONG_KEY"}],
    }
    doc["models"]["wrong-key"] = {"provider": "openai-wrong", "id": "gpt-4o"}
    env_keys(SG_TEST_PAGE_KEY=PAGE_KEY)
    page = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingErrorPage)
    threading.Thread(target=page.serve_forever, daemon=True).start()
    doc["providers"]["error-page"] = {
        "api": "openai",
        "base_url": f"http://127.0.0.1:{page.server_address[1]}/v1",
        "keys": [{"env": "SG_TEST_PAGE_KEY"}],
    }
    doc["models"]["error-page"] = {"provider": "error-page", "id": "gpt-4o"}
    gw = GatewayProcess(doc).start()
    yield gw
    gw.stop()
    page.shutdown()
    page.server_close()


class _EchoingErrorPage(BaseHTTPRequestHandler):
    """A proxy's HTML error page that quotes the request headers."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        body = ("<p>" + "x" * 275 + f"{self.headers.get('authorization')}</p>").encode()
        self.send_response(400)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-ratelimit-remaining-requests", "99")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _check(raw: bytes, headers: httpx.Headers, keys: tuple[str, ...] = (OA_KEY, AN_KEY)) -> None:
    for key in keys:
        assert key.encode() not in raw, raw[:500]
        assert key[-4:].encode() not in raw, raw[:500]  # no masked form either
        assert key[:8].encode() not in raw, raw[:500]
    for name in ACCOUNT_HEADERS:
        assert name not in headers, f"{name} reached the app"
    # Header values too: an echoing provider (or proxy) puts the key in one.
    values = "\n".join(f"{k}: {v}" for k, v in headers.multi_items())
    for key in keys:
        assert key not in values and key[-4:] not in values and key[:8] not in values, values
    if "x-echo-authorization" in headers:  # the fault was on: the header stays, scrubbed
        assert headers["x-echo-authorization"].startswith("Bearer ***")
    # What an app legitimately needs stays.
    assert headers.get("x-ratelimit-remaining-requests") == "99"


def _openai(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.base}/v1", api_key="app-placeholder", max_retries=0)


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_client_never_sees_the_key(
    scrub_gateway: GatewayProcess, model: str, stream: bool
) -> None:
    raw = _openai(scrub_gateway).chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": "hi"}],
        stream=stream,
        extra_headers={"x-fake-fault-oa": ECHO, "x-fake-fault-an": ECHO},
    )
    body = raw.http_response.read()
    assert b"masked=" in body  # the provider did echo: the check below is not vacuous
    _check(body, raw.headers)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_client_never_sees_the_key(scrub_gateway: GatewayProcess, stream: bool) -> None:
    client = anthropic.Anthropic(
        base_url=f"{scrub_gateway.base}/anthropic", api_key="app-placeholder", max_retries=0
    )
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        stream=stream,
        extra_headers={"x-fake-fault-an": ECHO},
    )
    body = raw.http_response.read()
    assert b"masked=" in body
    _check(body, raw.headers)


def test_openai_401_names_no_part_of_the_key(scrub_gateway: GatewayProcess) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        _openai(scrub_gateway).chat.completions.create(
            model="wrong-key",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-fault-oa": "account_headers=1"},
        )
    assert "Incorrect API key provided: *" in err.value.message
    _check(err.value.response.content, err.value.response.headers, keys=(WRONG_KEY,))


def test_a_quoted_error_page_is_scrubbed_before_it_is_cut_short(
    scrub_gateway: GatewayProcess,
) -> None:
    # sidegate quotes 300 characters of a non-JSON error body; scrubbing only
    # its own output let the first part of a key cut there through.
    with pytest.raises(openai.BadRequestError) as err:
        _openai(scrub_gateway).chat.completions.create(
            model="error-page", messages=[{"role": "user", "content": "hi"}]
        )
    content = err.value.response.content
    assert b"Bearer " in content and b"\xe2\x80\xa6" in content  # quoted, and cut
    _check(content, err.value.response.headers, keys=(PAGE_KEY,))

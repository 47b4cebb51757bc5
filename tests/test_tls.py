"""TLS origination to providers, as every real provider needs it: real Envoy, HTTPS fakes.

Each fake serves a certificate from its own CA, trusted through the provider's
``ca_file``; Envoy must send the base URL's host as SNI and refuse a
certificate for another host, an expired one, and one from a CA it was not
given, each with an error that names the provider and the reason. The same
checks run before any request through ``sidegate config check --probe``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from extproc.config import parse_config
from extproc.devtools.fake_provider import FakeProvider
from extproc.provider_check import check_provider
from tests.certs import Pair, issue
from tests.harness import GatewayProcess

KEY = "sk-tls-test-secret"
HOST = "localhost"  # resolves to loopback; certificates name hosts, not 127.0.0.1


@dataclass
class TlsFake:
    fake: FakeProvider
    ca_file: str


def _https_fake(tmp: Path, name: str, pair: Pair, api: str = "openai") -> TlsFake:
    for suffix, pem in (("crt", pair.cert_pem), ("key", pair.key_pem), ("ca", pair.ca_pem)):
        (tmp / f"{name}.{suffix}").write_text(pem)
    fake = FakeProvider(
        api=api,
        name=name,
        key=KEY,
        tls_cert=str(tmp / f"{name}.crt"),
        tls_key=str(tmp / f"{name}.key"),
        server_name=HOST,
    ).start()
    return TlsFake(fake, str(tmp / f"{name}.ca"))


@pytest.fixture(scope="module")
def tls_fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TlsFake]]:
    tmp = tmp_path_factory.mktemp("tls")
    own_ca = issue([HOST], "provider-ca")
    fakes = {
        "good": _https_fake(tmp, "good", own_ca),
        "good-an": _https_fake(tmp, "good-an", issue([HOST], "provider-ca-2"), "anthropic"),
        "wrong-host": _https_fake(tmp, "wrong-host", issue(["api.other.example"], "ca-3")),
        "expired": _https_fake(tmp, "expired", issue([HOST], "ca-4", expired=True)),
    }
    # Signed by a CA the gateway is not given: its ca_file is another CA.
    stranger = _https_fake(tmp, "stranger", issue([HOST], "unknown-ca"))
    stranger.ca_file = fakes["good"].ca_file
    fakes["stranger"] = stranger
    yield fakes
    for f in fakes.values():
        f.fake.stop()


def _doc(fakes: dict[str, TlsFake], key_env: str = "SG_TLS_KEY") -> dict[str, Any]:
    return {
        "providers": {
            name: {
                "api": f.fake.api,
                "base_url": f.fake.base_url,
                "ca_file": f.ca_file,
                "keys": [{"env": key_env}],
            }
            for name, f in fakes.items()
        },
        "models": {f"m-{name}": {"provider": name, "id": "gpt-4o-mini"} for name in fakes},
        "timeouts": {"connect": "2s", "retry_base": "10ms", "retry_max": "20ms"},
    }


@pytest.fixture(scope="module")
def tls_gateway(tls_fakes: dict[str, TlsFake]) -> Iterator[GatewayProcess]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SG_TLS_KEY", KEY)
        gw = GatewayProcess(_doc(tls_fakes)).start()
        yield gw
        gw.stop()


@contextlib.contextmanager
def _client(gw: GatewayProcess) -> Iterator[openai.OpenAI]:
    # Closed at once: a pooled keep-alive connection must not outlive the test.
    with openai.OpenAI(base_url=f"{gw.base}/v1", api_key="placeholder", max_retries=0) as c:
        yield c


def test_https_provider_with_its_own_ca_gets_sni_and_the_key(
    tls_gateway: GatewayProcess, tls_fakes: dict[str, TlsFake]
) -> None:
    fake = tls_fakes["good"].fake
    fake.sni_names.clear()
    fake.requests.clear()
    with _client(tls_gateway) as client:
        reply = client.chat.completions.create(
            model="m-good", messages=[{"role": "user", "content": "over tls"}]
        )
    assert reply.choices[0].message.content == "Hello from good! You said: over tls"
    assert fake.sni_names and set(fake.sni_names) == {HOST}
    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    # The Host header is the provider's, as the certificate and virtual hosting need.
    assert fake.requests[-1].headers["host"].split(":")[0] == HOST


def test_https_anthropic_provider_streams(
    tls_gateway: GatewayProcess, tls_fakes: dict[str, TlsFake]
) -> None:
    with _client(tls_gateway) as client:
        stream = client.chat.completions.create(
            model="m-good-an", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from good-an! You said: hi"
    assert set(tls_fakes["good-an"].fake.sni_names) == {HOST}


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        # Envoy checks the SAN against the base URL's host (match_typed_subject_alt_names).
        ("m-wrong-host", "SAN_matcher,_certificate_SANs_are_[api.other.example]"),
        ("m-expired", "certificate_has_expired"),
        ("m-stranger", "unable_to_get_local_issuer_certificate"),
    ],
)
def test_a_certificate_envoy_must_not_trust_is_refused_with_a_clear_error(
    tls_gateway: GatewayProcess, tls_fakes: dict[str, TlsFake], model: str, reason: str
) -> None:
    name = model.removeprefix("m-")
    fake = tls_fakes[name].fake
    fake.requests.clear()
    with _client(tls_gateway) as client, pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    err = info.value
    assert err.status_code == 503
    message = err.body["message"] if isinstance(err.body, dict) else str(err.body)
    assert f"could not connect to provider provider_{name}" in message, message
    assert "CERTIFICATE_VERIFY_FAILED" in message and reason in message, message
    assert isinstance(err.body, dict) and err.body["code"] == "upstream_unavailable"
    # The handshake failed: no request, so no key, ever reached that server.
    assert fake.requests == []


def _provider(fakes: dict[str, TlsFake], name: str) -> Any:
    return parse_config(_doc({name: fakes[name]})).providers[name]


def test_probe_reports_tls_and_key_per_provider(
    tls_fakes: dict[str, TlsFake], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SG_TLS_KEY", KEY)
    good = check_provider(_provider(tls_fakes, "good"), timeout=5)
    assert good.ok, good.lines()
    assert "TLS certificate valid for localhost" in good.lines()[0]
    assert good.keys == ["keys[0] (env SG_TLS_KEY): accepted"]

    an = check_provider(_provider(tls_fakes, "good-an"), timeout=5)
    assert an.ok and an.keys == ["keys[0] (env SG_TLS_KEY): accepted"], an.lines()

    wrong = check_provider(_provider(tls_fakes, "wrong-host"), timeout=5)
    assert not wrong.ok and wrong.problem and "not trusted" in wrong.problem
    assert "Hostname mismatch" in wrong.problem, wrong.problem

    expired = check_provider(_provider(tls_fakes, "expired"), timeout=5)
    assert expired.problem and "certificate has expired" in expired.problem, expired.problem

    stranger = check_provider(_provider(tls_fakes, "stranger"), timeout=5)
    assert stranger.problem and "unable to get local issuer" in stranger.problem


def test_probe_says_which_key_a_provider_rejects_and_never_prints_it(
    tls_fakes: dict[str, TlsFake], tmp_path: Path
) -> None:
    doc = _doc({"good": tls_fakes["good"], "good-an": tls_fakes["good-an"]})
    doc["providers"]["good"]["keys"] = [
        {"env": "SG_TLS_KEY"},
        {"env": "SG_TLS_BAD_KEY"},
        {"file": str(tmp_path / "absent.key")},
    ]
    doc["providers"]["ghost"] = {
        "api": "openai",
        "base_url": "https://api.sidegate-test.invalid/v1",
        "keys": [{"env": "SG_TLS_KEY"}],
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    bad_key = "sk-wrong-key-do-not-print"
    env = {"SG_TLS_KEY": KEY, "SG_TLS_BAD_KEY": bad_key, "PATH": "/usr/bin:/bin"}
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "config", "check", "-c", str(cfg), "--probe"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "keys[0] (env SG_TLS_KEY): accepted" in out
    assert "keys[1] (env SG_TLS_BAD_KEY): REJECTED (GET /v1/models answered 401)" in out
    assert f"keys[2] (file {tmp_path / 'absent.key'}): MISSING: cannot read key file" in out
    assert "provider good-an (https://localhost:" in out
    assert "ghost (https://api.sidegate-test.invalid/v1): UNREACHABLE: the host" in out
    assert "did not resolve" in out
    assert "probe: not ready: ghost, good" in out
    assert KEY not in out and bad_key not in out

    # All good: exit 0, each key accepted.
    doc["providers"]["good"]["keys"] = [{"env": "SG_TLS_KEY"}]
    del doc["providers"]["ghost"]
    cfg.write_text(yaml.safe_dump(doc))
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "config", "check", "-c", str(cfg), "--probe"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("accepted") == 2


def test_a_provider_whose_host_does_not_resolve_is_named_in_the_error_and_the_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SG_TLS_KEY", KEY)
    doc = {
        "providers": {
            "ghost": {
                "api": "openai",
                "base_url": "https://api.sidegate-test.invalid/v1",
                "keys": [{"env": "SG_TLS_KEY"}],
            },
            "ghost-an": {
                "api": "anthropic",
                "base_url": "https://anthropic.sidegate-test.invalid",
                "keys": [{"env": "SG_TLS_KEY"}],
            },
        },
        "models": {"m": {"provider": "ghost"}, "claude": {"provider": "ghost-an"}},
    }
    gw = GatewayProcess(doc).start()
    try:
        with _client(gw) as client, pytest.raises(openai.APIStatusError) as info:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 503
        body = info.value.body
        assert isinstance(body, dict) and body["code"] == "upstream_unavailable"
        assert "provider provider_ghost has no address" in body["message"]
        assert "did not resolve" in body["message"]
        # The same in the Anthropic client's format.
        with (
            anthropic.Anthropic(
                base_url=f"{gw.base}/anthropic", api_key="x", max_retries=0
            ) as client,
            pytest.raises(anthropic.APIStatusError) as an_info,
        ):
            client.messages.create(
                model="claude", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert an_info.value.status_code == 503
        an_body = an_info.value.response.json()
        assert an_body["type"] == "error" and an_body["error"]["type"] == "api_error"
        assert "provider provider_ghost-an has no address" in an_body["error"]["message"]
    finally:
        gw.stop()

    from extproc.provider_check import warn_unresolved
    from tests.harness import wait_until

    with caplog.at_level("WARNING", logger="extproc.provider_check"):
        warn_unresolved(parse_config(doc))
        wait_until(lambda: len(caplog.records) == 2, "a warning per unresolved provider")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "provider ghost: the host api.sidegate-test.invalid of its base_url does not resolve" in text
    assert "provider ghost-an: the host anthropic.sidegate-test.invalid" in text

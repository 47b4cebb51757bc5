"""The generated Envoy bootstrap: accepted by the real Envoy 1.40, with the invariants we rely on."""

from __future__ import annotations

import subprocess
from pathlib import Path

from extproc.config import load_config
from extproc.envoy.bootstrap import render_bootstrap, render_yaml
from extproc.runner import find_envoy

ROOT = Path(__file__).resolve().parent.parent


def test_examples_validate_with_envoy(tmp_path: Path) -> None:
    for name in ("sidegate.yaml", "local.yaml"):
        f = tmp_path / f"{name}.envoy.yaml"
        f.write_text(
            render_yaml(load_config(ROOT / "examples" / name), "/run/sidegate/extproc.sock")
        )
        r = subprocess.run(
            [find_envoy(), "--mode", "validate", "-c", str(f), "--disable-hot-restart"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr[-2000:]


def test_invariants() -> None:
    config = load_config(ROOT / "examples" / "sidegate.yaml")
    b = render_bootstrap(config, "/s.sock")
    listener = b["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["address"] == "127.0.0.1"
    filters = listener["filter_chains"][0]["filters"]
    assert [f["name"] for f in filters] == [
        "envoy.filters.network.connection_limit",
        "envoy.filters.network.http_connection_manager",
    ]
    hcm = filters[-1]["typed_config"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    # No silent bypass: anything the policy stage did not route is refused.
    assert routes[-1]["name"] == "unrouted" and routes[-1]["direct_response"]["status"] == 500
    # A route to a provider matches only on what the policy stage's reply sets
    # (dynamic metadata, which a client cannot send); every other route answers.
    proxied = [r for r in routes if "route" in r]
    assert proxied and all(
        r["match"]["dynamic_metadata"][0]["filter"] == "sidegate" and "headers" not in r["match"]
        for r in proxied
    )
    assert all("direct_response" in r for r in routes if r not in proxied)
    assert [f["name"] for f in hcm["http_filters"]] == [
        "envoy.filters.http.buffer",
        "envoy.filters.http.ext_proc",
        "sidegate.hold_until_routed",
        "envoy.filters.http.router",
    ]
    # The policy stage gets a model call in one message: the body, and the
    # headers its steps read as attributes.
    policy = hcm["http_filters"][1]["typed_config"]
    assert policy["processing_mode"]["request_header_mode"] == "SKIP"
    assert policy["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert "request.headers['x-sidegate-user']" in policy["request_attributes"]
    # Only the model lists, cards and the Anthropic base URL's probes skip the
    # policy stage: GETs (and probe HEADs) Envoy answers itself.
    direct = [r for r in routes[:-1] if "direct_response" in r and r.get("name") != "entry"]
    assert {r["name"] for r in direct} == {
        "models",
        "model",
        "anthropic-models",
        "anthropic-model",
        "anthropic-probe",
    }
    for r in direct:
        method = {"exact": "GET"}
        if r["name"] == "anthropic-probe":
            method = {"safe_regex": {"regex": "GET|HEAD"}}
            assert r["match"]["path"] in ("/anthropic", "/anthropic/", "/anthropic/api/hello")
        else:
            assert r["match"]["path"].startswith(
                ("/v1/models", "/openai/v1/models", "/anthropic/v1/models")
            )
        assert r["match"]["headers"] == [{"name": ":method", "string_match": method}]
        assert r["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    # A model call without a body sends the policy stage nothing: its entry
    # route answers it (a 400 in the caller's format).
    entries = [r for r in routes[:-1] if r.get("name") == "entry"]
    assert {r["match"]["path"] for r in entries} >= {"/v1/chat/completions", "/anthropic/v1/messages"}
    assert all(r["direct_response"]["status"] == 400 for r in entries)
    # Every other path sends its headers, which the stage refuses.
    catch_all = routes[-1]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
    assert catch_all["overrides"]["processing_mode"]["request_header_mode"] == "SEND"
    for r in proxied:
        assert r["route"]["timeout"] == "0s"  # a long stream is never cut by a total deadline
        retry = r["route"]["retry_policy"]
        assert 429 in retry["retriable_status_codes"] and retry["refresh_cluster_on_retry"]
        # First byte and inter-chunk silence are separate timers: the per-try
        # idle timer would keep running (and cut) once the response has started.
        assert "per_try_idle_timeout" not in retry and retry["per_try_timeout"] == "60.000s"
        assert r["route"]["idle_timeout"] == "300.000s"
    # Slow clients are bounded.
    assert hcm["request_headers_timeout"] == "10.000s" and hcm["request_timeout"] == "60.000s"
    extproc = b["static_resources"]["clusters"][0]
    assert extproc["circuit_breakers"]["thresholds"][0]["max_requests"] > 2 * 2048
    for cluster in b["static_resources"]["clusters"][1:]:
        budget = cluster["circuit_breakers"]["thresholds"][0]["retry_budget"]
        assert budget["budget_percent"]["value"] > 0 and budget["min_retry_concurrency"] >= 32
        opts = cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
        ]
        chain = [f["name"] for f in opts["http_filters"]]
        # The provider stage, then the buffer that restores the content-length
        # its CONTINUE_AND_REPLACE drops, sized to the request body bound.
        assert chain == [
            "envoy.filters.http.ext_proc",
            "envoy.filters.http.buffer",
            "envoy.filters.http.upstream_codec",
        ]
        stage = opts["http_filters"][0]["typed_config"]["processing_mode"]
        assert stage["request_header_mode"] == "SEND" and stage["request_body_mode"] == "NONE"
        buffer = opts["http_filters"][1]["typed_config"]["max_request_bytes"]
        assert buffer == config.limits.body_buffer_bytes
        tls = cluster["transport_socket"]["typed_config"]
        assert tls["sni"] and tls["common_tls_context"]["validation_context"]["trusted_ca"]

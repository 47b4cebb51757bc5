"""The probe port's scrape endpoint: sidegate's metrics and Envoy's stats, nothing else.

A real ``sidegate run`` (real Envoy) driven by the official SDKs; the text is
parsed with prometheus_client's own parser, so a malformed exposition fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client.parser import text_string_to_metric_families

from extproc.config import ConfigError, parse_config
from extproc.devtools.fake_provider import FakeProvider
from extproc.prometheus.config import PrometheusConfig
from extproc.prometheus.endpoint import MetricsEndpoint
from extproc.prometheus.exposition import ENVOY_UP, Exposition
from tests.conftest import KEYS, gateway_doc
from tests.harness import wait_until
from tests.sidegate_run import SidegateRun

USER = "alice-7f3a91@example.com"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(text: str, name: str, **labels: str) -> float:
    """The one sample of ``name`` with exactly these labels."""
    found = [v for (n, ls), v in _samples(text).items() if n == name and dict(ls) == labels]
    assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
    return found[0]


@pytest.fixture
def run(tmp_path: Path, fakes: dict[str, FakeProvider]) -> Iterator[SidegateRun]:
    gw = SidegateRun(tmp_path, gateway_doc(fakes)).wait_ready()
    yield gw
    gw.stop()


def test_metrics_carry_sidegate_and_envoy_and_no_secret(run: SidegateRun) -> None:
    with openai.OpenAI(base_url=f"{run.base}/v1", api_key="app-placeholder", max_retries=0) as c:
        for _ in range(3):
            c.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-sidegate-user": USER},
            )
    with anthropic.Anthropic(
        base_url=f"{run.base}/anthropic", api_key="app-placeholder", max_retries=0
    ) as a:
        a.messages.create(
            model="claude-sonnet", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    r = run.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPE
    text = r.text
    # sidegate's part: the process, and whether Envoy's part came.
    assert _value(text, ENVOY_UP) == 1
    assert _value(text, "sidegate_extproc_process_cpu_seconds_total") > 0
    # Envoy's part: requests on the app listener and per provider cluster.
    assert _value(text, "envoy_http_downstream_rq_total", envoy_http_conn_manager_prefix="sidegate") == 4
    assert _value(text, "envoy_cluster_upstream_rq_total", envoy_cluster_name="provider_openai-a") == 3
    assert _value(text, "envoy_cluster_upstream_rq_total", envoy_cluster_name="provider_anthropic-a") == 1
    # Names: Envoy's start with envoy_, none of ours does.
    for family in text_string_to_metric_families(text):
        assert family.name.startswith(("envoy_", "sidegate_", "gen_ai_", "target_info")), family.name
    # The probe port is on the pod's address: no key, no user id, no app placeholder.
    for secret in [*KEYS.values(), USER, "app-placeholder"]:
        assert secret not in text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/stats"),
        ("GET", "/stats/prometheus"),
        ("GET", "/config_dump"),
        ("GET", "/clusters"),
        ("POST", "/logging?level=debug"),
        ("POST", "/quitquitquit"),
        ("POST", "/metrics"),
        ("GET", "/metrics/extra"),
    ],
)
def test_probe_port_serves_no_other_admin_path(run: SidegateRun, method: str, path: str) -> None:
    assert run.get(path, method).status_code == 404
    assert run.get("/ready").status_code == 200


def test_a_configured_path_and_used_stats_only(
    tmp_path: Path, fakes: dict[str, FakeProvider]
) -> None:
    doc: dict[str, Any] = {
        **gateway_doc(fakes),
        "telemetry": {"prometheus": {"path": "/custom/metrics", "envoy_stats": "used"}},
    }
    gw = SidegateRun(tmp_path, doc).wait_ready()
    try:
        assert gw.get("/metrics").status_code == 404
        r = gw.get("/custom/metrics")
        assert r.status_code == 200
        assert _value(r.text, ENVOY_UP) == 1
        # usedonly: a stat Envoy never wrote (no retry happened) is left out.
        assert "envoy_cluster_upstream_rq_retry{" not in r.text
        assert "envoy_server_live" in r.text
    finally:
        gw.stop()


def test_disabled_serves_no_metrics(tmp_path: Path, fakes: dict[str, FakeProvider]) -> None:
    doc = {**gateway_doc(fakes), "telemetry": {"prometheus": {"enabled": False}}}
    gw = SidegateRun(tmp_path, doc).wait_ready()
    try:
        assert gw.get("/metrics").status_code == 404
        assert gw.get("/ready").status_code == 200
        assert not list(tmp_path.glob("sidegate-*/metrics.sock"))
    finally:
        gw.stop()


# --- the endpoint alone, against an Envoy admin that is gone or stuck ----------------


async def _scrape(endpoint: MetricsEndpoint, socket: str) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_unix_connection(socket)
    started = time.monotonic()
    writer.write(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
    answer = await reader.read()
    writer.close()
    return answer, time.monotonic() - started


@pytest.mark.parametrize("admin", ["absent", "stuck"])
def test_sidegate_part_served_when_envoy_admin_fails(tmp_path: Path, admin: str) -> None:
    admin_socket = str(tmp_path / "admin.sock")

    async def main() -> tuple[bytes, float]:
        held: list[asyncio.StreamWriter] = []

        async def never_answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)

        stuck = await asyncio.start_unix_server(never_answer, admin_socket) if admin == "stuck" else None
        exposition = Exposition(PrometheusConfig())
        exposition.provider()
        endpoint = MetricsEndpoint(exposition, PrometheusConfig(), admin_socket)
        await endpoint.start(str(tmp_path / "metrics.sock"))
        try:
            return await _scrape(endpoint, str(tmp_path / "metrics.sock"))
        finally:
            await endpoint.close()
            for w in held:
                w.close()
            if stuck is not None:
                stuck.close()
                with contextlib.suppress(Exception):
                    await stuck.wait_closed()

    answer, took = asyncio.run(main())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK"), head
    text = body.decode()
    assert _value(text, ENVOY_UP) == 0
    assert "sidegate_extproc_process_cpu_seconds_total" in text
    assert "envoy_" not in text.replace(ENVOY_UP, "")
    assert took < 4.0, f"a scrape waited {took:.1f}s for a stuck admin (bound: 2 s + slack)"


def test_metrics_socket_is_private(tmp_path: Path) -> None:
    async def main() -> int:
        endpoint = MetricsEndpoint(Exposition(PrometheusConfig()), PrometheusConfig(), None)
        path = tmp_path / "metrics.sock"
        await endpoint.start(str(path))
        mode = path.stat().st_mode & 0o777
        await endpoint.close()
        return mode

    assert asyncio.run(main()) == 0o600


# --- sidegate's instruments as Prometheus names, with a bound on series ------------


def test_instruments_render_with_bounded_series() -> None:
    exposition = Exposition(PrometheusConfig(max_series_per_metric=5))
    provider: MeterProvider = exposition.provider()
    meter = provider.get_meter("sidegate")
    requests = meter.create_counter("sidegate.requests", unit="{request}")
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    for i in range(50):
        requests.add(1, {"sidegate.route": f"route-{i}", "sidegate.outcome": "ok"})
    duration.record(0.25, {"gen_ai.provider.name": "openai"})
    text = exposition.render().decode()
    exposition.shutdown()
    series = [k for k in _samples(text) if k[0] == "sidegate_requests_total"]
    assert len(series) == 5 + 1, series  # the limit, plus the one overflow series
    assert sum(v for (n, _), v in _samples(text).items() if n == "sidegate_requests_total") == 50
    assert any(dict(ls).get("otel_metric_overflow") == "true" for _, ls in series)
    count = "gen_ai_client_operation_duration_seconds_count"
    assert _value(text, count, gen_ai_provider_name="openai") == 1
    assert ENVOY_UP not in text  # no Envoy asked for, no gauge claiming either way


@pytest.mark.parametrize(
    ("prometheus", "message"),
    [
        ({"path": "/ready"}, "telemetry.prometheus.path: /ready is the readiness probe's path"),
        ({"path": "metrics"}, "telemetry.prometheus.path: expected an absolute URL path"),
        ({"envoy_stats": "some"}, "telemetry.prometheus.envoy_stats: expected one of: all, used, none"),
        ({"max_series_per_metric": 0}, "telemetry.prometheus.max_series_per_metric: expected an integer between 1"),
        ({"port": 9090}, "telemetry.prometheus.port: unknown field"),
    ],
)
def test_config_errors_name_the_field(
    fakes: dict[str, FakeProvider], prometheus: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({**gateway_doc(fakes), "telemetry": {"prometheus": prometheus}})
    assert message in str(e.value)


def test_a_reload_applies_envoy_stats_at_once_and_says_the_path_waits(
    tmp_path: Path, fakes: dict[str, FakeProvider]
) -> None:
    gw = SidegateRun(tmp_path, gateway_doc(fakes)).wait_ready()
    try:
        assert "envoy_server_live" in gw.get("/metrics").text
        doc = {
            **gateway_doc(fakes),
            "telemetry": {"prometheus": {"envoy_stats": "none", "path": "/elsewhere"}},
        }
        (tmp_path / "sidegate.yaml").write_text(yaml.safe_dump(doc))
        wait_until(
            lambda: "envoy_server_live" not in gw.get("/metrics").text,
            "a scrape without Envoy's stats after the reload",
            timeout=20,
            every=0.2,
        )
        text = gw.get("/metrics").text
        assert ENVOY_UP not in text  # Envoy not asked, so no claim either way
        assert "sidegate_extproc_process_cpu_seconds_total" in text
        # The probe listener is static: the old path serves until a restart, and the log says so.
        assert gw.get("/elsewhere").status_code == 404
        wait_until(lambda: "take effect on restart" in gw.output, "the restart warning", 5)
    finally:
        gw.stop()


def test_a_busy_ready_port_is_refused_by_name(
    tmp_path: Path, fakes: dict[str, FakeProvider]
) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        gw = SidegateRun(tmp_path, gateway_doc(fakes), ready_port=holder.getsockname()[1])
        try:
            assert gw.proc.wait(30) == 1
        finally:
            out = gw.stop()
    assert f"cannot listen on 127.0.0.1:{gw.ready_port}" in out
    assert "choose another with --ready-port" in out


def test_telemetry_off_still_serves_the_process_and_envoy(
    tmp_path: Path, fakes: dict[str, FakeProvider]
) -> None:
    doc = {**gateway_doc(fakes), "telemetry": {"enabled": False}}
    gw = SidegateRun(tmp_path, doc).wait_ready()
    try:
        with openai.OpenAI(base_url=f"{gw.base}/v1", api_key="p", max_retries=0) as c:
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        text = gw.get("/metrics").text
    finally:
        out = gw.stop()
    assert "sidegate_requests_total" not in text  # no instruments without telemetry
    assert _value(text, ENVOY_UP) == 1
    assert _value(text, "envoy_http_downstream_rq_total", envoy_http_conn_manager_prefix="sidegate") == 1
    assert "sidegate_extproc_process_cpu_seconds_total" in text
    assert "MetricReader" not in out  # the unattached reader is never asked to collect


def test_sidegate_requests_counted_per_outcome(run: SidegateRun) -> None:
    with openai.OpenAI(base_url=f"{run.base}/v1", api_key="p", max_retries=0) as c:
        for _ in range(3):
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    text = run.get("/metrics").text
    ok = [
        v
        for (n, ls), v in _samples(text).items()
        if n == "sidegate_requests_total" and dict(ls).get("sidegate_outcome") == "ok"
    ]
    assert sum(ok) == 3

"""The telemetry config: validation, precedence over OTEL_* variables, what is built when."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from extproc.config import ConfigError, parse_config
from extproc.devtools.fake_provider import FakeProvider
from extproc.telemetry import start
from extproc.telemetry.config import Export, Protocol, TelemetryConfig, Traces
from extproc.telemetry.destinations import endpoint_for, exports, protocol_for
from extproc.telemetry.tracing import sampler_for
from tests.conftest import gateway_doc
from tests.harness import GatewayProcess

BASE: dict[str, Any] = {
    "providers": {"p": {"api": "openai", "base_url": "https://x.test/v1", "keys": [{"env": "K"}]}},
    "models": {"m": {"provider": "p", "id": "m-1"}},
}


def parse(telemetry: Any) -> TelemetryConfig:
    return parse_config({**BASE, "telemetry": telemetry}).telemetry


@pytest.mark.parametrize(
    ("telemetry", "path", "words"),
    [
        ({"export": {"protocol": "thrift"}}, "telemetry.export.protocol", "grpc, http/protobuf"),
        ({"export": {"endpoint": "collector:4317"}}, "telemetry.export.endpoint", "http://"),
        ({"export": {"timeout": "soon"}}, "telemetry.export.timeout", "duration"),
        ({"traces": {"sampler": "sometimes"}}, "telemetry.traces.sampler", "parentbased_always_on"),
        ({"traces": {"sampler_ratio": 2}}, "telemetry.traces.sampler_ratio", "between 0 and 1"),
        ({"traces": {"max_queue_size": 0}}, "telemetry.traces.max_queue_size", "between 1"),
        (
            {"traces": {"max_queue_size": 10, "max_export_batch_size": 20}},
            "telemetry.traces.max_export_batch_size",
            "max_queue_size",
        ),
        ({"metrics": {"caller_labels": ["ip"]}}, "telemetry.metrics.caller_labels[0]", "tenant"),
        ({"content": {"routes": ["nope"]}}, "telemetry.content.routes[0]", "no route"),
        ({"content": {"max_chars": 1}}, "telemetry.content.max_chars", "between 64"),
        ({"tracing": {}}, "telemetry.tracing", "unknown field"),
    ],
)
def test_bad_fields_are_named(telemetry: Any, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(telemetry)
    assert path in str(e.value) and words in str(e.value)


def test_fields_parse() -> None:
    t = parse(
        {
            "service_name": "gw",
            "export": {"endpoint": "http://c:4318", "protocol": "http/protobuf", "timeout": "3s"},
            "traces": {"sampler": "parentbased_traceidratio", "sampler_ratio": 0.25},
            "metrics": {"caller_labels": ["tenant", "tenant"], "export_interval": "15s"},
            "content": {"routes": ["m"], "max_chars": 100},
        }
    )
    assert t.export == Export("http://c:4318", Protocol.HTTP, 3.0)
    assert t.metrics.caller_labels == ("tenant",) and t.metrics.export_interval == 15.0
    assert t.content.captures("m") and not t.content.captures("other")
    assert parse({"content": {"routes": ["*"]}}).content.captures("anything")


def test_config_wins_over_env_and_env_fills_in() -> None:
    env = {
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    assert "TraceIdRatioBased{0.5}" in sampler_for(Traces(), env).get_description()
    configured = sampler_for(Traces(sampler="always_off"), env)
    assert configured.get_description() == "AlwaysOffSampler"
    assert sampler_for(Traces(), {}).get_description().startswith("ParentBased{root:AlwaysOn")
    assert protocol_for(Export(), "TRACES", env) is Protocol.GRPC
    assert protocol_for(Export(protocol=Protocol.HTTP), "TRACES", env) is Protocol.HTTP
    assert protocol_for(Export(), "TRACES", {}) is Protocol.HTTP  # the spec's default
    # HTTP endpoints get the signal's path, as OTEL_EXPORTER_OTLP_ENDPOINT does.
    assert endpoint_for(Export("http://c:4318/"), Protocol.HTTP, "/v1/traces") == (
        "http://c:4318/v1/traces"
    )
    assert endpoint_for(Export("http://c:4317"), Protocol.GRPC, "/v1/traces") == "http://c:4317"
    # Export happens only where there is somewhere to export to.
    assert not exports("TRACES", Export(), {})
    assert exports("TRACES", Export(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"})
    assert exports("TRACES", Export(), {"OTEL_TRACES_EXPORTER": "otlp"})
    assert not exports("TRACES", Export("http://c:4317"), {"OTEL_TRACES_EXPORTER": "none"})


def test_what_start_builds() -> None:
    on = TelemetryConfig(export=Export("http://127.0.0.1:9", Protocol.GRPC))
    # Nowhere to export and no reader: nothing is built at all.
    assert not start(TelemetryConfig(), env={}).active
    assert not start(on, env={"OTEL_SDK_DISABLED": "true"}).active
    assert not start(TelemetryConfig(enabled=False), metric_readers=[InMemoryMetricReader()]).active
    tel = start(on, env={})
    try:
        assert tel.tracing is not None and tel.metrics is not None
    finally:
        tel.shutdown()


def test_metrics_without_export_feed_a_reader(fakes: dict[str, FakeProvider]) -> None:
    """A reader of its own (a Prometheus endpoint) gets metrics with OTLP export off."""
    reader = InMemoryMetricReader()
    doc = gateway_doc(fakes)
    doc["identity"] = {"tenant": "acme"}
    doc["telemetry"] = {"metrics": {"caller_labels": ["tenant"]}}
    config = parse_config(doc)
    tel = start(config.telemetry, metric_readers=[reader], env={})
    assert tel.tracing is None and tel.metrics is not None
    gw = GatewayProcess(doc, telemetry=tel).start()
    try:
        with openai.OpenAI(base_url=f"{gw.base}/v1", api_key="x", max_retries=0) as client:
            for _ in range(3):
                client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "x"}]
                )
        gw.wait_completed(3)
        data = reader.get_metrics_data()
        assert data is not None
        metrics = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        [point] = metrics["sidegate.requests"].data.data_points
        assert point.value == 3
        # Asked for: the tenant is a label (the user, not asked for, is not).
        assert point.attributes["sidegate.caller.tenant"] == "acme"
        assert "sidegate.caller.user" not in point.attributes
        # With no trace export, the stages note nothing tracing would read.
        assert gw.completed[-1].traceparent is None and gw.completed[-1].trace_id == 0
    finally:
        gw.stop()


@pytest.mark.parametrize(
    "telemetry",
    [{"enabled": False}, {}, {"export": {"endpoint": "http://127.0.0.1:9"}, "enabled": False}],
)
def test_off_loads_nothing(telemetry: dict[str, Any]) -> None:
    """Off, or with nowhere to send anything: the SDK is never imported (zero cost)."""
    script = (
        "import sys, json\n"
        "from extproc.config import parse_config\n"
        "from extproc.gateway import Gateway\n"
        f"doc = json.loads({json.dumps(json.dumps({**BASE, 'telemetry': telemetry}))})\n"
        "gw = Gateway(parse_config(doc))\n"
        "assert not gw.telemetry.active\n"
        "from extproc.pipeline import Needs\n"
        "extra = Needs.CALLER | Needs.TRACE_CONTEXT | Needs.RESPONSE_META\n"
        "assert not gw.record_needs & extra, gw.record_needs\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_stale_otel_protos_are_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """xds-protos's older copy of opentelemetry/proto on top: a clear error, not a dead thread."""
    import types

    from extproc.telemetry import protos

    stale = types.ModuleType("opentelemetry.proto.common.v1.common_pb2")
    monkeypatch.setitem(sys.modules, "opentelemetry.proto.common.v1.common_pb2", stale)
    package = importlib.import_module("opentelemetry.proto.common.v1")
    monkeypatch.setattr(package, "common_pb2", stale, raising=False)
    with pytest.raises(protos.ProtosOverwritten, match="--force-reinstall --no-deps"):
        protos.check()


def test_the_installed_otel_protos_are_the_real_ones() -> None:
    from extproc.telemetry import protos

    protos.check()

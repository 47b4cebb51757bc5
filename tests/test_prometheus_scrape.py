"""A real Prometheus server scrapes ``sidegate run``'s probe port and answers queries on it.

Debian's ``prometheus`` package (.ci/run installs it); the test starts it on a
free port with its own config and data dir, and reads the counters back through
Prometheus's HTTP API after requests sent with the official openai SDK. Every
query of the chart's Grafana dashboard is then run against the same server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from extproc.devtools.fake_provider import FakeProvider
from tests.ci import skip_or_fail
from tests.conftest import gateway_doc
from tests.harness import free_port, wait_until
from tests.sidegate_run import SidegateRun

REQUESTS = 5
DASHBOARD = Path(__file__).parent.parent / "charts" / "sidegate" / "dashboards" / "sidegate.json"
# Counted only when they happen: a healthy run has no series for them.
ONLY_ON_FAILURE = ("sidegate_extproc_errors_total",)


class Prometheus:
    def __init__(self, binary: str, tmp_path: Path, target: str) -> None:
        self.port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "sidegate",
                            "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            )
        )
        self.log = (tmp_path / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5)
        self._log_path = tmp_path / "prometheus.log"

    def wait_ready(self) -> Prometheus:
        def ready() -> bool:
            assert self.proc.poll() is None, f"prometheus exited:\n{self._log_path.read_text()}"
            try:
                return self.http.get("/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, "Prometheus to be ready", 30, every=0.1)
        return self

    def answer(self, expr: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.http.get("/api/v1/query", params={"query": expr}).json()
        return answer

    def query(self, expr: str) -> float | None:
        """The value of an instant query with one result, None while it has none."""
        answer = self.answer(expr)
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, expr: str, expected: float, timeout: float = 20.0) -> None:
        seen: list[float | None] = []

        def reached() -> bool:
            seen.append(self.query(expr))
            return seen[-1] == expected

        try:
            wait_until(reached, f"{expr} == {expected} in Prometheus", timeout, every=0.25)
        except AssertionError as e:
            raise AssertionError(f"{e} (last values: {seen[-5:]})") from None

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        skip_or_fail("the prometheus server is not installed (Debian package: prometheus)")
    return binary


@pytest.fixture
def run(tmp_path: Path, fakes: dict[str, FakeProvider]) -> Iterator[SidegateRun]:
    doc = gateway_doc(fakes)
    doc["quotas"] = [{"name": "one-a-minute", "per": ["user"], "window": "1m", "requests": 1}]
    gw = SidegateRun(tmp_path, doc).wait_ready()
    yield gw
    gw.stop()


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard target, its variables filled as Grafana would."""
    dashboard = json.loads(DASHBOARD.read_text())
    fill = {"$namespace": ".*", "$__rate_interval": "30s", "$__range": "5m"}
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in fill.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def _traffic(base: str) -> int:
    """Requests of every kind a dashboard panel is about; returns how many were sent."""
    hi = [{"role": "user", "content": "hi"}]
    with openai.OpenAI(base_url=f"{base}/v1", api_key="placeholder", max_retries=0) as c:
        for i in range(REQUESTS):
            c.chat.completions.create(
                model="gpt-4o", messages=hi, extra_headers={"x-sidegate-user": f"u{i}"}
            )
        # A second request of u0 within the minute: the quota refuses it.
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(
                model="gpt-4o", messages=hi, extra_headers={"x-sidegate-user": "u0"}
            )
        stream = c.chat.completions.create(
            model="gpt-4o", messages=hi, stream=True, extra_headers={"x-sidegate-user": "s"}
        )
        assert list(stream)
        # fast: gpt-4o first, gpt-4o-b after it; the first answers 503 (a failover).
        c.chat.completions.create(
            model="fast",
            messages=hi,
            extra_headers={"x-sidegate-user": "f", "x-fake-fault-oa": "status=503"},
        )
        # gpt-4o alone, failing every attempt: the client gets the provider's 503.
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(
                model="gpt-4o",
                messages=hi,
                extra_headers={"x-sidegate-user": "e", "x-fake-fault-oa": "status=503"},
            )
    return REQUESTS + 4


def test_prometheus_scrapes_the_probe_port(
    tmp_path: Path, prometheus_binary: str, run: SidegateRun
) -> None:
    prom = Prometheus(prometheus_binary, tmp_path, f"127.0.0.1:{run.ready_port}").wait_ready()
    try:
        # The target is up and the scrape carried Envoy's part too.
        prom.wait_value('up{job="sidegate"}', 1)
        prom.wait_value('sidegate_envoy_stats_up{job="sidegate"}', 1)
        sent = _traffic(run.base)
        # sidegate's counter and Envoy's agree with the client: every request, once.
        prom.wait_value('sum(sidegate_requests_total{job="sidegate"})', sent)
        prom.wait_value(
            'envoy_http_downstream_rq_total{job="sidegate",envoy_http_conn_manager_prefix="sidegate"}',
            sent,
        )
        # Not ok: the quota refusal and the provider's 503.
        prom.wait_value(
            'sum(sidegate_requests_total{job="sidegate",sidegate_outcome="ok"})', sent - 2
        )
        prom.wait_value('sum(sidegate_quota_refusals_total{sidegate_quota="one-a-minute"})', 1)
        # The failover's first attempt and the failing request's first, by the
        # labels the dashboard groups them by.
        prom.wait_value('sum(sidegate_retries_total{job="sidegate"})', 2)
        prom.wait_value(
            'sum(sidegate_retries_total{sidegate_failover="true",sidegate_retry_reason!=""})', 1
        )
        # Every dashboard query is valid PromQL with data behind it (a rate needs
        # two scrapes of a series, hence the wait), but for failures that did not happen.
        empty = []
        for title, expr in _dashboard_queries():
            if any(name in expr for name in ONLY_ON_FAILURE):
                assert prom.answer(expr)["status"] == "success", expr
                continue
            try:
                wait_until(lambda e=expr: prom.answer(e)["data"]["result"], title, 15, every=0.5)
            except AssertionError:
                empty.append(f"{title}: {expr}")
        assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)
    finally:
        prom.stop()

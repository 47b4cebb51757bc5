"""A real Prometheus server scrapes ``sidegate run``'s probe port and answers queries on it.

Debian's ``prometheus`` package (.ci/run installs it); the test starts it on a
free port with its own config and data dir, and reads the counters back through
Prometheus's HTTP API after requests sent with the official openai SDK.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

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

    def query(self, expr: str) -> float | None:
        """The value of an instant query with one result, None while it has none."""
        answer = self.http.get("/api/v1/query", params={"query": expr}).json()
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
    gw = SidegateRun(tmp_path, gateway_doc(fakes)).wait_ready()
    yield gw
    gw.stop()


def test_prometheus_scrapes_the_probe_port(
    tmp_path: Path, prometheus_binary: str, run: SidegateRun
) -> None:
    prom = Prometheus(prometheus_binary, tmp_path, f"127.0.0.1:{run.ready_port}").wait_ready()
    try:
        # The target is up and the scrape carried Envoy's part too.
        prom.wait_value('up{job="sidegate"}', 1)
        prom.wait_value('sidegate_envoy_stats_up{job="sidegate"}', 1)
        with openai.OpenAI(base_url=f"{run.base}/v1", api_key="placeholder", max_retries=0) as c:
            for _ in range(REQUESTS):
                c.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
                )
        prom.wait_value(
            'envoy_http_downstream_rq_total{job="sidegate",envoy_http_conn_manager_prefix="sidegate"}',
            REQUESTS,
        )
        prom.wait_value(
            'envoy_cluster_upstream_rq_total{job="sidegate",envoy_cluster_name="provider_openai-a"}',
            REQUESTS,
        )
        assert prom.query('sidegate_extproc_process_cpu_seconds_total{job="sidegate"}')
    finally:
        prom.stop()

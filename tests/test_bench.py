"""``sidegate bench`` keeps working: every target answers and the proxy CPU is charged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.test_message_counts import EXPECTED


def test_bench_measures_every_target(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "extproc.cli", "bench", "--no-quotas"),
            *("--requests", "40", "--concurrency", "1", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    rows = {(r["target"], r["stream"]): r for r in json.loads(out.read_text())["results"]}
    targets = ("direct", "envoy", "sidegate", "+telemetry", "+audit", "+telemetry +audit")
    assert set(rows) == {(t, s) for t in targets for s in (False, True)}
    for row in rows.values():
        assert row["requests"] >= 40 and row["p50_ms"] > 0
    # Only the proxies' own processes are charged, and sidegate's include Envoy's.
    assert rows[("direct", False)]["extproc_cpu_ms"] is None
    assert rows[("envoy", False)]["extproc_cpu_ms"] is None
    assert rows[("envoy", False)]["envoy_cpu_ms"] is not None
    sidegate = rows[("sidegate", False)]
    assert sidegate["extproc_cpu_ms"] is not None and sidegate["envoy_cpu_ms"] is not None
    assert rows[("sidegate", True)]["ttft_p50_ms"] is not None
    # The telemetry row: the same gateway exporting traces and metrics over OTLP.
    assert rows[("+telemetry", False)]["extproc_cpu_ms"] is not None
    assert "+telemetry ext_proc (python, OpenTelemetry SDK loaded) RSS MiB" in run.stdout
    assert "| sidegate | 1 |" in run.stdout
    # Counted by the ext_proc: the bench's request is the OpenAI pass-through shape.
    assert rows[("envoy", False)]["messages_per_req"] is None
    shape = EXPECTED["openai_passthrough"]
    assert sidegate["messages_per_req"] == sum(n for per in shape.values() for n in per.values())
    # The audit log adds no message: its record rides on the replies already sent.
    assert rows[("+audit", False)]["messages_per_req"] == sidegate["messages_per_req"]
